"""DSDMatcher on the tiny random SD pipeline: only LoRA is registered, trained and checkpointed;
evaluation outputs (interface 3) equal the scorer's scores; weights round-trip; resume is exact."""
import json
import os.path as osp

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper

from image_text_matching.models.lora import LORA_WEIGHT_NAME
from image_text_matching.models.losses import MarginRankingLoss
from image_text_matching.models.matcher import DSDMatcher
from tests.helpers.itm_questions import make_questions
from tests.helpers.tiny_models import save_sd_pipeline

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO_ROOT, 'tests', 'fixtures', 'configs',
                  'tiny-dsd-lora_1xb1-2it_fixed-questions.py')
OPTIM = dict(type='OptimWrapper', clip_grad=dict(max_norm=1.0),
             optimizer=dict(type='AdamW', lr=5e-2, weight_decay=1e-2))


@pytest.fixture(scope='module')
def pipeline_dir(tmp_path_factory):
    return save_sd_pipeline(str(tmp_path_factory.mktemp('itm_matcher') / 'sd'))


def scorer_cfg(folder):
    return dict(type='DSDScorer', pretrained=folder, num_timesteps=2, noise_seed=0)


def frozen_tensors(matcher):
    """Every non-LoRA tensor of the UNet, VAE and text encoder, cloned."""
    scorer = matcher.scorer
    nets = dict(unet=scorer.unet, vae=scorer.vae, text_encoder=scorer.text_encoder)
    return {f'{net}.{k}': v.detach().clone() for net, module in nets.items()
            for k, v in module.state_dict().items() if 'lora_' not in k}


def lora_ids(unet):
    return {id(p) for n, p in unet.named_parameters() if 'lora_' in n}


def margin_on_grid(matcher, question):
    """The margin loss of the question's DSD scores on the scorer's timestep grid."""
    with torch.no_grad():
        scores = matcher.scorer.score(question['images'], question['texts'])['dsd']
    return matcher.loss(scores[0], question['target']).item()


@pytest.fixture(scope='module')
def trained(pipeline_dir):
    """A matcher before and after 4 AdamW steps on one text-retrieval question."""
    matcher = DSDMatcher(scorer=scorer_cfg(pipeline_dir), lora=dict(targets='all_attention',
                                                                     rank=2),
                         loss=dict(type='MarginRankingLoss', margin=1.0))
    question = make_questions()['text']
    wrapper = build_optim_wrapper(matcher, OPTIM)
    before = dict(frozen=frozen_tensors(matcher), margin=margin_on_grid(matcher, question),
                  lora={k: v.clone() for k, v in matcher.state_dict().items()},
                  optimizer_ids={id(p) for g in wrapper.optimizer.param_groups
                                 for p in g['params']})
    torch.manual_seed(0)
    logs = [matcher.train_step([question], wrapper) for _ in range(3)]
    logs.append(matcher.train_step(pseudo_collate([question]), wrapper))  # the Runner's form
    return matcher, question, before, logs


def test_only_lora_is_registered_and_handed_to_the_optimizer(trained):
    matcher, _, before, _ = trained
    keys = list(matcher.state_dict())
    assert len(keys) == 32 * 2  # lora_A and lora_B of 32 projections
    assert all(k.startswith('unet_lora.') and ('.lora_A.default.' in k or '.lora_B.default.' in k)
               for k in keys), keys[:3]
    ids = lora_ids(matcher.scorer.unet)
    assert {id(p) for p in matcher.parameters()} == ids == before['optimizer_ids']
    assert matcher.scorer.unet.is_gradient_checkpointing


def test_training_changes_only_lora_and_lowers_the_margin_loss(trained):
    matcher, question, before, logs = trained
    after = frozen_tensors(matcher)
    assert sorted(after) == sorted(before['frozen'])
    changed = [k for k in after if not torch.equal(after[k], before['frozen'][k])]
    assert not changed, changed[:5]
    moved = [k for k, v in matcher.state_dict().items() if not torch.equal(v, before['lora'][k])]
    assert len(moved) == 64
    assert all(set(log) == {'loss', 'acc'} for log in logs)
    assert margin_on_grid(matcher, question) < before['margin'] - 0.05


def test_gradient_checkpointing_gives_the_same_gradients(trained):
    matcher, question, _, _ = trained
    unet = matcher.scorer.unet

    def grads():
        matcher.zero_grad()
        torch.manual_seed(7)  # the same timestep and noise seed
        matcher.loss_of([question])['loss'].backward()
        return [p.grad.clone() for p in matcher.parameters()]

    with_checkpointing = grads()
    unet.disable_gradient_checkpointing()
    try:
        plain = grads()
    finally:
        unet.enable_gradient_checkpointing()
        matcher.zero_grad()
    assert any(g.abs().sum() > 0 for g in plain)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(with_checkpointing, plain))


def test_step_returns_every_score_of_every_candidate(trained, monkeypatch):
    matcher, _, _, _ = trained
    questions = make_questions()
    grad_seen = []
    score = matcher.scorer.score

    def spy(*args, **kwargs):
        grad_seen.append(torch.is_grad_enabled())
        return score(*args, **kwargs)

    monkeypatch.setattr(matcher.scorer, 'score', spy)
    outputs = matcher.test_step([questions['text'], questions['image'], questions['pairwise']])
    assert grad_seen == [False] * 3
    assert matcher.val_step(pseudo_collate([questions['image']])) == outputs[1:2]
    monkeypatch.undo()
    text, image, pairwise = outputs
    assert {k: text[k] for k in ('question_id', 'subset', 'retrieval', 'target')} == dict(
        question_id='t0', subset='obj', retrieval='text', target=1)
    assert (image['retrieval'], image['target'], pairwise['retrieval']) == ('image', 2,
                                                                            'pairwise')
    with torch.no_grad():
        direct = {k: matcher.scorer.score(q['images'], q['texts']) for k, q in questions.items()}
    for kind in ('dsd', 'attention', 'itm'):
        assert text['scores'][kind] == pytest.approx(direct['text'][kind][0].tolist(), abs=1e-6)
        assert image['scores'][kind] == pytest.approx(direct['image'][kind][:, 0].tolist(),
                                                      abs=1e-6)
        matrix = pairwise['scores'][kind]
        assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
        assert [v for row in matrix for v in row] == pytest.approx(
            direct['pairwise'][kind].flatten().tolist(), abs=1e-6)
        assert all(type(v) is float for v in text['scores'][kind])


def test_weights_round_trip_through_state_dict_and_lora_folder(trained, pipeline_dir, tmp_path):
    matcher, _, _, _ = trained
    questions = list(make_questions().values())
    expected = matcher.test_step(questions)
    fresh = DSDMatcher(scorer=scorer_cfg(pipeline_dir), lora=dict(targets='all_attention',
                                                                   rank=2))
    assert fresh.test_step(questions) != expected  # untrained LoRA: other scores
    fresh.load_state_dict(matcher.state_dict(), strict=True)
    assert fresh.test_step(questions) == expected
    path = matcher.save_lora(tmp_path / 'lora')
    assert path == str(tmp_path / 'lora' / LORA_WEIGHT_NAME)
    loaded = DSDMatcher(scorer=scorer_cfg(pipeline_dir), lora_weights=str(tmp_path / 'lora'))
    assert sorted(loaded.state_dict()) == sorted(matcher.state_dict())
    for got, want in zip(loaded.test_step(questions), expected):
        for kind, values in want['scores'].items():
            assert torch.allclose(torch.tensor(got['scores'][kind]), torch.tensor(values),
                                  atol=1e-5)


def test_hard_negative_loss_trains_on_the_scorers_denoising_errors(pipeline_dir):
    matcher = DSDMatcher(scorer=scorer_cfg(pipeline_dir), lora=dict(targets='cross_kv', rank=2),
                         loss=dict(type='HardNegativeITMLoss'), gradient_checkpointing=False)
    questions = make_questions()
    image = questions['image']
    with torch.no_grad():
        predictions, goals = matcher.denoising_predictions(image['images'], image['texts'],
                                                           t=300, seed=5)
        itm = matcher.scorer.score(image['images'], image['texts'], timesteps=[300],
                                   noise_seed=5)['itm']
    # the scorer's ITM score is -||eps - eps_theta||_2 of the same prediction
    assert predictions.shape == (3, 1, 4, 8, 8) and goals.shape == (3, 1, 4, 8, 8)
    assert torch.allclose(-(predictions - goals).flatten(2).norm(dim=2), itm, atol=1e-5)
    wrapper = build_optim_wrapper(matcher, OPTIM)
    assert sum(len(g['params']) for g in wrapper.optimizer.param_groups) == 8 * 2
    torch.manual_seed(0)
    log = matcher.train_step([questions['text'], image, questions['pairwise']], wrapper)
    assert torch.isfinite(log['loss']) and 0 <= float(log['acc']) <= 1


def test_mistakes_get_one_paragraph_errors(pipeline_dir):
    matcher = DSDMatcher(scorer=scorer_cfg(pipeline_dir))  # zero-shot: nothing to train
    assert matcher.state_dict() == {} and not list(matcher.parameters())
    question = make_questions()['text']
    with pytest.raises(RuntimeError, match=r"DSDMatcher has no trainable weights: set lora=dict\("
                                           r"targets='all_attention', rank=4\)"):
        matcher(question, mode='loss')
    with pytest.raises(TypeError, match=r"DSDMatcher expects questions: dicts with keys "
                                        r"\('question_id', 'images', 'texts', 'target', "
                                        r"'retrieval', 'subset'\).*got \['images'\]"):
        matcher({'images': question['images']}, mode='predict')
    with pytest.raises(ValueError, match=r"question 't0': a 'text' question has 1 image\(s\) and "
                                         r"any number of text\(s\); got 2 and 3"):
        matcher.test_step([dict(question, images=question['images'].repeat(2, 1, 1, 1))])
    with pytest.raises(ValueError, match=r"score='clip' is not a score kind; use one of "
                                         r"\('dsd', 'attention', 'itm'\)"):
        DSDMatcher(scorer=matcher.scorer, score='clip')
    with pytest.raises(ValueError, match=r"must be None or a dict with keys from \('targets', "
                                         r"'rank', 'alpha', 'dropout'\) \(unknown: \['target'\]\)"):
        DSDMatcher(scorer=matcher.scorer, lora=dict(target='cross_kv'))
    assert isinstance(matcher.loss, MarginRankingLoss) and matcher.loss.margin == 0.1


def test_runner_checkpoints_hold_only_lora_resume_exactly_and_export(pipeline_dir, tmp_path,
                                                                      tools_kit, capsys):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from common.io import load_checkpoint

    def run(name, resume_from=None):
        cfg = Config.fromfile(CONFIG)
        cfg.model.scorer.pretrained = pipeline_dir
        cfg.work_dir = str(tmp_path / name)
        cfg.experiment_name = name
        cfg.load_from, cfg.resume = resume_from, resume_from is not None
        runner = Runner.from_cfg(cfg)
        runner.train()
        return runner.model.state_dict()

    straight = run('straight')
    ckpt = load_checkpoint(str(tmp_path / 'straight' / 'iter_1.pth'))  # the safe loader
    assert sorted(ckpt['state_dict']) == sorted(straight)
    assert all(k.startswith('unet_lora.') for k in straight) and len(straight) == 64
    assert len(ckpt['optimizer']['state']) == 64 and 'rng_state' in ckpt
    resumed = run('resumed', resume_from=str(tmp_path / 'straight' / 'iter_1.pth'))
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not different, different[:5]

    # tools/export_itm_lora.py: the checkpoint's LoRA as a diffusers folder, no SD weights needed
    export = tools_kit.load('export_itm_lora').main
    out = str(tmp_path / 'exported')
    assert export([CONFIG, str(tmp_path / 'straight' / 'iter_2.pth'), out]) == 0
    assert 'exported the LoRA of' in capsys.readouterr().out
    info = json.loads((tmp_path / 'exported' / 'export_info.json').read_text())
    assert (info['iteration'], info['rank'], info['lora_alpha'], info['adapted_modules']) == \
        (2, 2, 2.0, 32)
    loaded = DSDMatcher(scorer=scorer_cfg(pipeline_dir), lora_weights=out).state_dict()
    assert sorted(loaded) == sorted(straight)
    assert all(torch.equal(loaded[k], straight[k]) for k in straight)
    with pytest.raises(SystemExit) as exits:  # an argument error, before any heavy import
        export([CONFIG, str(tmp_path / 'straight' / 'iter_2.pth'), out])
    assert exits.value.code == 2
    assert export([CONFIG, str(tmp_path / 'straight' / 'iter_2.pth'), str(tmp_path / 'x'),
                   '--cfg-options', 'model.lora=None']) == 2
    err = capsys.readouterr().err
    assert "already exists; pass --overwrite" in err
    assert 'model.lora is None, so that config trains no LoRA adapter' in err
    assert not (tmp_path / 'x').exists()
