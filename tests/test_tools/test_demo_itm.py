"""The offline image-text matching demo (``make demo-itm``): its tokenizer, captioned digits,
text-conditioned DDPM trainer and exported pipeline, and ``tools/demo_itm.py --quick`` end to
end."""
import json
import math
import os
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from image_text_matching.demo import (DIGIT_WORDS, HARD_NEGATIVES, DigitsITMDataset,
                                      TextDDPMTrainer, build_word_tokenizer, digit_captions,
                                      nearest_mean_digit)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TEXT_DDPM = 'image_text_matching/configs/demo_digits/text-ddpm_unet-cond-tiny_1xb64-1500it_' \
    'captioned-digits.py'


def _demo_model_cfg():
    """The model of the demo's text-DDPM config (a 0.25 M-weight UNet: cheap to build)."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, TEXT_DDPM)).model.to_dict()
    return {k: v for k, v in cfg.items() if k not in ('type', 'data_preprocessor')}


class _Sample(dict):
    """Stands for mmpretrain's DataSample: ``.get('caption')``."""


def _demo_trainer(**kwargs):
    torch.manual_seed(0)
    return TextDDPMTrainer(**dict(_demo_model_cfg(), **kwargs))


# ---------------------------------------------------------------- tokenizer
def test_word_tokenizer_round_trips_a_caption(tmp_path):
    from transformers import AutoTokenizer
    build_word_tokenizer(digit_captions(), model_max_length=8).save_pretrained(str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    # ids: <pad> 0, <bos> 1, <eos> 2, <unk> 3, then the sorted words: a 4, eight 5, five 6,
    # four 7, handwritten 8, nine 9, one 10, seven 11, six 12, three 13, two 14, zero 15
    assert len(tokenizer) == 16 and tokenizer.model_max_length == 8
    tokens = tokenizer(['a handwritten seven', 'A Handwritten SEVEN cat', ''],
                       padding='max_length', truncation=True, max_length=8)
    assert tokens['input_ids'] == [[1, 4, 8, 11, 2, 0, 0, 0], [1, 4, 8, 11, 3, 2, 0, 0],
                                   [1, 2, 0, 0, 0, 0, 0, 0]]
    assert tokens['attention_mask'][0] == [1, 1, 1, 1, 1, 0, 0, 0]
    assert tokenizer.decode(tokens['input_ids'][0], skip_special_tokens=True) == \
        'a handwritten seven'


def test_word_tokenizer_refuses_a_length_that_truncates_captions():
    with pytest.raises(ValueError, match=r'model_max_length=4 is shorter than the longest caption '
                       r'plus <bos>/<eos> \(5 tokens\); raise it to at least 5'):
        build_word_tokenizer(digit_captions(), model_max_length=4)


# ---------------------------------------------------------------- data
def test_captions_and_questions():
    assert digit_captions()[7] == 'a handwritten seven' and len(DIGIT_WORDS) == 10
    data = DigitsITMDataset(split='train', few_shot=0.05, image_size=16)
    assert len(data) == int(1197 * 0.05) == 59  # the reference's "first 5%"
    from common.datasets.digits import _load_digits, digits_split_indices, upsample_digits
    images, labels = _load_digits()
    first = digits_split_indices(labels, 'train')[0]
    item = data[0]
    assert item['question_id'] == f'digits-train-{first}' and item['retrieval'] == 'text'
    assert item['texts'] == digit_captions() and item['target'] == labels[first]
    pixels = upsample_digits(images[first:first + 1], 16)[0]  # [16, 16, 3] uint8
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1
    assert item['images'].shape == (1, 3, 16, 16)
    torch.testing.assert_close(item['images'][0], expected)
    assert len(DigitsITMDataset(split='test', number=7)) == 7


def test_hard_negatives_are_the_nearest_mean_digits_of_the_training_split():
    from common.datasets.digits import _load_digits, digits_split_indices
    images, labels = _load_digits()
    train = digits_split_indices(labels, 'train')
    assert nearest_mean_digit(images[train], labels[train]) == HARD_NEGATIVES
    assert all(k != v for k, v in HARD_NEGATIVES.items())


# ---------------------------------------------------------------- the trainer
def test_loss_is_the_caption_conditioned_epsilon_objective():
    model = _demo_trainer(caption_dropout=0.0).eval()
    x0 = torch.rand(3, 3, 16, 16) * 2 - 1
    samples = [_Sample(caption=c) for c in ('a handwritten one', 'a handwritten two', '')]
    torch.manual_seed(5)
    loss = model.loss(x0, samples)['loss']
    torch.manual_seed(5)
    eps = torch.randn_like(x0)
    t = torch.randint(0, 1000, (3, ))
    abar = model.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    ids = model.tokenizer([s['caption'] for s in samples], padding='max_length',
                          return_tensors='pt').input_ids
    text = model.text_encoder(ids).last_hidden_state
    expected = F.mse_loss(model.unet(x_t, t, encoder_hidden_states=text).sample, eps)
    torch.testing.assert_close(loss, expected)
    with pytest.raises(KeyError, match='a data sample has no `caption`'):
        model.loss(x0, [_Sample(), _Sample(), _Sample()])


def test_caption_dropout_and_ema():
    model = _demo_trainer(caption_dropout=0.5).train()
    torch.manual_seed(1)
    dropped = model.drop_captions(['x'] * 8)
    torch.manual_seed(1)
    assert dropped == ['' if d else 'x' for d in (torch.rand(8) < 0.5).tolist()]
    assert 0 < dropped.count('') < 8
    assert model.eval().drop_captions(['x', 'y']) == ['x', 'y']  # never at evaluation
    # EMA: the first update copies, the second moves 1 - d of the way, d = min(0.995, 2 / 11)
    param = model.unet.conv_in.bias
    with torch.no_grad():
        param.fill_(1.0)
        model.update_ema()
        param.fill_(3.0)
        model.update_ema()
    ema = model.ema['unet'].conv_in.bias
    torch.testing.assert_close(ema, torch.full_like(ema, 1.0 + (9.0 / 11.0) * 2.0))


def test_exported_pipeline_loads_like_a_downloaded_one(tmp_path):
    from common.teachers.loading import load_diffusion_components
    model = _demo_trainer()
    model.update_ema()
    folder = str(tmp_path / 'pipeline')
    model.export_pipeline().save_pretrained(folder)
    assert not osp.exists(osp.join(folder, 'vae'))
    parts = load_diffusion_components(folder)
    assert parts.vae is None and parts.is_text_conditioned and len(parts.text_encoders) == 1
    tokenizer = parts.tokenizers[0]
    ids = tokenizer(['a handwritten nine'], padding='max_length', return_tensors='pt').input_ids
    assert ids.tolist() == [[1, 4, 8, 9, 2, 0, 0, 0]]
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        text = parts.text_encoders[0](ids.repeat(2, 1)).last_hidden_state
        ours = model.ema['unet'](x, t, encoder_hidden_states=model.ema['text_encoder'](
            ids.repeat(2, 1)).last_hidden_state).sample
        loaded = parts.unet(x, t, encoder_hidden_states=text).sample
    torch.testing.assert_close(loaded, ours)
    # DSD's default layers: the last cross-attention block of down / mid / up, all at 8 x 8
    from image_text_matching.models import DSDScorer
    scorer = DSDScorer(pretrained=folder, num_timesteps=2)
    assert scorer.layers == ['down_blocks.1.attentions.0.transformer_blocks.0.attn2',
                             'mid_block.attentions.0.transformer_blocks.0.attn2',
                             'up_blocks.0.attentions.0.transformer_blocks.0.attn2',
                             'up_blocks.0.attentions.1.transformer_blocks.0.attn2']


# ---------------------------------------------------------------- the demo, end to end
def test_demo_reuses_a_trained_model_of_the_same_setting_only(tmp_path, tools_kit, capsys,
                                                               monkeypatch):
    demo = tools_kit.load('demo_itm')
    wd = str(tmp_path)
    pipeline = osp.join(wd, 'text_ddpm', 'pipeline')
    stamp = osp.join(wd, 'text_ddpm', 'demo_settings.json')
    os.makedirs(pipeline)
    open(osp.join(pipeline, 'model_index.json'), 'w').close()
    with open(stamp, 'w') as f:
        json.dump(dict(quick=True, config=demo.TEXT_DDPM), f)
    trained = []
    monkeypatch.setattr(demo, 'run_tool', lambda *args: trained.append(args))
    assert demo.text_ddpm_pipeline(demo.parse_args(['--quick']), wd, 1, 6) == pipeline
    assert not trained and 'text-conditioned DDPM exists' in capsys.readouterr().out
    # --fresh, or the other setting (the full model): trained again, and the stamp says so
    for argv in (['--fresh', '--quick'], []):
        assert demo.text_ddpm_pipeline(demo.parse_args(argv), wd, 1, 6) == pipeline
    assert [args[3] for args in trained] == ['train', 'train']
    assert '--cfg-options' in trained[0][4] and '--cfg-options' not in trained[1][4]
    with open(stamp) as f:
        assert json.load(f) == dict(quick=False, config=demo.TEXT_DDPM)
    assert demo.text_ddpm_pipeline(demo.parse_args(['--pipeline', pipeline]), wd, 1, 6) == \
        osp.abspath(pipeline)


def test_demo_quick_end_to_end(tmp_path, tools_kit):
    wd = str(tmp_path / 'demo_itm')
    proc = tools_kit.run([osp.join(tools_kit.repo_root, 'tools', 'demo_itm.py'), '--quick',
                          '--work-dir', wd], cwd=str(tmp_path), timeout=600,
                         env=tools_kit.env(OMP_NUM_THREADS=1))
    assert proc.returncode == 0, proc.output[-4000:]
    with open(osp.join(wd, 'results.json')) as f:
        results = json.load(f)
    assert set(results['rows']) == {'before_lora', 'after_lora'}
    assert results['quick'] is True and results['protocol']['num_test'] == 4
    assert results['protocol']['hard_negatives'] == {str(k): v for k, v in
                                                      HARD_NEGATIVES.items()}
    for stage, folder in (('before_lora', 'before'), ('after_lora', 'after')):
        with open(osp.join(wd, folder, 'questions.json')) as f:
            dump = json.load(f)
        assert len(dump['questions']) == 4
        for kind in ('attention', 'itm', 'dsd'):
            row = results['rows'][stage][kind]
            # the 10-way numbers are the metric's; the binary one recomputed from the dump
            assert row['accuracy_10way'] == round(dump['metrics'][f'itm/{kind}/accuracy'], 2)
            wins = [q['scores'][kind][q['target']] > q['scores'][kind][HARD_NEGATIVES[q['target']]]
                    for q in dump['questions']]
            assert row['hard_negative_accuracy'] == round(100 * np.mean(wins), 2)
            for q in dump['questions']:
                assert len(q['scores'][kind]) == 10
                assert all(math.isfinite(v) for v in q['scores'][kind])
    # the second evaluation ran with the trained LoRA weights: the scores moved
    with open(osp.join(wd, 'before', 'questions.json')) as f:
        before = json.load(f)['questions']
    assert any(a['scores']['dsd'] != b['scores']['dsd'] for a, b in zip(before, dump['questions']))
    steps = results['steps']
    assert set(steps) == {'train_text_ddpm', 'samples', 'evaluate_before', 'lora_training',
                          'evaluate_after', 'heatmaps'}
    assert all(step['wall_s'] >= 0 and step['cpu_s'] >= 0 for step in steps.values())
    for name in ('samples.png', 'heatmaps.png', 'text_ddpm/pipeline/model_index.json',
                 'lora/last_checkpoint'):
        assert osp.isfile(osp.join(wd, name)), name
    assert 'before lora' in proc.stdout and 'after lora' in proc.stdout
