"""The image-text matching readers on tiny fake releases in the real formats (fake_releases.py).

Checked: the questions (ids, texts, targets, retrieval kinds, subsets) and their pixels (every
fake image is one solid colour, so the loaded tensor tells which file each candidate is), the
few-shot counts, seeded negatives (deterministic, distinct, never the positive, independent of
the split), the restricted unpickler (a malicious pickle is refused and never runs) and the
one-paragraph errors.
"""
import os
import os.path as osp
import pickle
import re

import numpy as np
import pytest
import torch

from image_text_matching.datasets import (ComVGDataset, ITMDataError, PickleRefusedError,
                                          RefCOCOgDataset, VQABinaryDataset, VQAOtherDataset,
                                          WinogroundDataset, few_shot_count, load_image,
                                          parse_vqa_line, read_plain_pickle)

from . import fake_releases as fake

S = 16  # image side in these tests
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def releases(tmp_path_factory):
    return fake.write_all(str(tmp_path_factory.mktemp('itm_releases')))


def expected_pixels(key):
    """The [-1, 1] value of each channel of the fake image ``key``."""
    return torch.tensor(fake.colour(key), dtype=torch.float32) / 127.5 - 1


def assert_images_are(images, keys, atol=3 / 127.5):
    """``images`` (I, 3, S, S) are, in order, the solid fake images ``keys`` (JPEG: +-3 levels)."""
    assert images.shape == (len(keys), 3, S, S) and images.dtype == torch.float32
    for img, key in zip(images, keys):
        target = expected_pixels(key)[:, None, None].expand(3, S, S)
        assert torch.allclose(img, target, atol=atol), (key, img.mean((1, 2)), target[:, 0, 0])


# ------------------------------------------------------------------------------ images, base

def test_load_image_stretches_to_the_square_in_minus_one_to_one(tmp_path):
    from PIL import Image
    path = str(tmp_path / 'wide.png')
    Image.new('RGB', (12, 5), (255, 0, 51)).save(path)  # not square: stretched, never padded
    img = load_image(path, 8)
    assert img.shape == (3, 8, 8)
    assert torch.equal(img[0], torch.ones(8, 8)) and torch.equal(img[1], -torch.ones(8, 8))
    assert torch.allclose(img[2], torch.full((8, 8), 51 / 127.5 - 1))


def test_few_shot_is_the_floor_of_the_fraction():
    assert few_shot_count(95010, 0.05) == 4750  # RefCOCOg: 4,750 train questions
    assert few_shot_count(100, 0.29) == 29      # float round-off guarded (0.29*100=28.99...)
    assert few_shot_count(19, 0.05) == 0
    with pytest.raises(ITMDataError, match=r'few_shot=5: expected a fraction in \(0, 1\]'):
        few_shot_count(100, 5)


def test_bad_image_size_and_stride(releases):
    root = releases['comvg']['root']
    with pytest.raises(ITMDataError, match='image_size=20: expected a positive multiple of 8'):
        ComVGDataset(root, image_size=20)
    ds = ComVGDataset(root, image_size=S, stride=2, max_questions=2)
    assert [ds.get_data_info(i)['question_id'] for i in range(len(ds))] == ['0', '2']


# ------------------------------------------------------------------------------ ComVG

def test_comvg_questions_are_image_retrieval_among_pos_and_neg(releases):
    ds = ComVGDataset(releases['comvg']['root'], image_size=S)
    assert len(ds) == len(fake.COMVG_TEST)
    item = ds[2]
    qid, sentence, pos, neg, kind = fake.COMVG_TEST[2]
    assert (item['question_id'], item['texts'], item['target'], item['retrieval'],
            item['subset']) == (str(qid), [sentence], 0, 'image', kind)
    assert_images_are(item['images'], [pos, neg])
    assert [osp.basename(p) for p in item['image_paths']] == [f'{pos}.jpg', f'{neg}.jpg']


def test_comvg_subsets_by_neg_value_with_aliases(releases):
    root = releases['comvg']['root']
    by_kind = {k: [str(r[0]) for r in fake.COMVG_TEST if r[4] == k]
               for k in ('subject', 'object', 'verb')}
    for subset, kind in [('object', 'object'), ('obj', 'object'), ('sub', 'subject'),
                         ('predicate', 'verb'), ('VERB', 'verb')]:
        ds = ComVGDataset(root, subset=subset, image_size=S)
        assert [ds.get_data_info(i)['question_id'] for i in range(len(ds))] == by_kind[kind]
        assert {ds.get_data_info(i)['subset'] for i in range(len(ds))} == {kind}
    both = ComVGDataset(root, subset=['verb', 'sub'], image_size=S)
    assert len(both) == len(by_kind['verb']) + len(by_kind['subject'])
    with pytest.raises(ITMDataError) as err:
        ComVGDataset(root, subset='attribute', image_size=S)
    assert "subset='attribute' names no rows" in str(err.value)
    assert "['object', 'subject', 'verb']" in str(err.value)  # the values present


def test_comvg_train_few_shot_is_the_first_rows(releases):
    ds = ComVGDataset(releases['comvg']['root'], split='train', few_shot=0.05, image_size=S)
    train = releases['comvg']['train']
    assert len(ds) == 2  # 5% of 40 rows
    assert [ds.get_data_info(i)['question_id'] for i in range(2)] == ['100', '101']
    assert ds[1]['texts'] == [train[1][1]]
    assert_images_are(ds[1]['images'], [train[1][4], train[1][5]])  # VG_100K, 8x6 stretched
    assert len(ComVGDataset(releases['comvg']['root'], split='train', image_size=S)) == 40


def test_comvg_missing_files_name_the_layout(releases, tmp_path):
    with pytest.raises(ITMDataError) as err:
        ComVGDataset(str(tmp_path), image_size=S)
    message = str(err.value)
    assert 'compositional_visual_genome.csv: expected the ComVG test CSV file, but it does ' \
           'not exist' in message
    assert 'DATA_ROOT/vg_concept/<image_id>.jpg' in message and '\n' not in message
    root = str(tmp_path / 'comvg')
    fake.write_comvg(root)
    os.remove(osp.join(root, 'vg_concept', '414.jpg'))
    ds = ComVGDataset(root, image_size=S)
    with pytest.raises(ITMDataError, match=r'414\.jpg: expected an image of ComVG, but it does '
                                           r'not exist\. ComVG is read as laid out like this'):
        ds[1]
    with open(osp.join(root, 'compositional_visual_genome.csv'), 'w') as f:
        f.write('id,sentence,pos_image_id\n0,a,1\n')
    with pytest.raises(ITMDataError, match=r"\['pos_triplet', 'neg_triplet', 'neg_image_id', "
                                           r"'neg_value'\] are missing from the header"):
        ComVGDataset(root, image_size=S)


# ------------------------------------------------------------------------------ RefCOCOg

def refcocog(root, **kwargs):
    kwargs.setdefault('image_size', S)
    return RefCOCOgDataset(root, **kwargs)


def infos(ds):
    return [ds.get_data_info(i) for i in range(len(ds))]


def test_refcocog_questions_split_and_negatives(releases):
    root, refs = releases['refcocog']['root'], releases['refcocog']['refs']
    sentences = [(ref, s) for ref in refs for s in ref['sentences']]  # file order
    train, test = refcocog(root, split='train'), refcocog(root, split='test')
    assert (len(train), len(test)) == (1, 19)  # floor(0.05 * 20) questions train, the rest test
    everything = infos(train) + infos(test)
    assert [q['question_id'] for q in everything] == [str(s['sent_id']) for _, s in sentences]
    ref_of = {s['raw']: ref['ref_id'] for ref, s in sentences if s['raw'] != 'the man'}
    for q, (ref, sentence) in zip(everything, sentences):
        assert q['retrieval'] == 'text' and q['target'] == 0 and q['subset'] == 'refcocog'
        assert q['texts'][0] == sentence['raw'] and len(q['texts']) == 10
        negatives = q['texts'][1:]
        assert len(set(negatives)) == 9 and sentence['raw'] not in negatives
        # from OTHER refs ('the man', a sentence of refs 8 and 9, is checked by the line above)
        assert all(ref_of.get(t, -1) != ref['ref_id'] for t in negatives)
        assert osp.basename(q['image_paths'][0]) == f'COCO_train2014_{ref["image_id"]:012d}.jpg'
    # seeded: the same again; another seed, other negatives; independent of the split
    assert infos(refcocog(root, split='test')) == infos(test)
    assert [q['texts'] for q in infos(refcocog(root, split='test', negative_seed=1))] != \
        [q['texts'] for q in infos(test)]
    whole = infos(refcocog(root, few_shot=None))
    assert [q['texts'] for q in whole] == [q['texts'] for q in everything]
    item = test[0]
    assert_images_are(item['images'], [sentences[1][0]['image_id']])


def _converter():
    import importlib.util
    path = osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'refcocog_refs_to_json.py')
    spec = importlib.util.spec_from_file_location('refcocog_refs_to_json', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_refcocog_json_conversion_reads_the_same(releases, tmp_path):
    root = releases['refcocog']['root']
    tool, out = _converter(), str(tmp_path / 'refs.json')
    assert tool.main([osp.join(root, 'refs(google).p'), out]) == 0
    assert infos(refcocog(root, refs=out)) == infos(refcocog(root))
    with pytest.raises(tool._cli.RunError, match='exists; pass --overwrite to replace it'):
        tool.main([osp.join(root, 'refs(google).p'), out])


class _Payload:
    """Unpickling this would create ``marker`` (``builtins.open(marker, 'w')``)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_malicious_refs_pickle_is_refused_and_never_runs(tmp_path, capsys):
    marker = str(tmp_path / 'pwned')
    root = str(tmp_path / 'refcocog')
    fake.write_refcocog(root)
    refs = fake.refcocog_refs()
    refs[3]['sentences'][0]['raw'] = _Payload(marker)
    with open(osp.join(root, 'refs(google).p'), 'wb') as f:
        pickle.dump(refs, f, protocol=2)
    with pytest.raises(PickleRefusedError) as err:
        refcocog(root)
    # (the builtin open is pickled as io.open)
    assert re.search(r'asks to load the Python global (io|builtins|__builtin__)\.open;',
                     str(err.value))
    assert 'nothing from it was run' in str(err.value)
    assert not osp.exists(marker)
    # the converter refuses it the same way: exit 1, one paragraph, nothing written
    tool, out = _converter(), str(tmp_path / 'refs.json')
    code = tool._cli.run_cli(tool.PROG, tool.main, [osp.join(root, 'refs(google).p'), out])
    stderr = capsys.readouterr().err.strip()
    assert code == 1 and stderr.count('\n') == 0 and '.open; expected a pickle of plain data' \
        in stderr
    assert not osp.exists(out) and not osp.exists(marker)


def test_plain_pickle_reader_keeps_plain_data(tmp_path):
    data = [{'a': (1, 2.5), 'b': {3}, 'c': frozenset([4]), 'd': b'x', 'e': None, 'f': True}]
    for protocol in (0, 2, 4):
        path = str(tmp_path / f'p{protocol}.p')
        with open(path, 'wb') as f:
            pickle.dump(data, f, protocol=protocol)
        assert read_plain_pickle(path) == data
    with open(path, 'wb') as f:
        f.write(pickle.dumps(data)[:-5])
    with pytest.raises(ITMDataError, match='truncated'):
        read_plain_pickle(path)


def test_refcocog_errors(releases, tmp_path):
    root = str(tmp_path / 'refcocog')
    fake.write_refcocog(root, num_refs=3)  # 6 sentences: 4 from other refs per question
    with pytest.raises(ITMDataError, match=r'hold only 4 distinct sentences; num_negatives=9'):
        refcocog(root, few_shot=None)
    ds = refcocog(root, few_shot=None, num_negatives=4)
    assert all(len(q['texts']) == 5 for q in infos(ds))
    with open(osp.join(root, 'refs(google).p'), 'wb') as f:
        pickle.dump({'not': 'a list'}, f)
    with pytest.raises(ITMDataError, match='expected a non-empty list of REFER ref dicts, got '
                                           'dict'):
        refcocog(root)


# ------------------------------------------------------------------------------ VQAv2

def test_vqa_line_parsing():
    assert parse_vqa_line('COCO_val2014_1.jpg*The question is asking about yes or no: is it? '
                          'it is') == ('COCO_val2014_1.jpg', 'binary', 'is it? it is')
    assert parse_vqa_line('x.jpg*The question is asking about others: what? a: b') == \
        ('x.jpg', 'others', 'what? a: b')
    assert parse_vqa_line('no star here') is None


def test_vqa_binary_is_image_retrieval_with_seeded_distinct_negatives(releases):
    root = releases['vqa']['root']
    ds = VQABinaryDataset(root, image_size=S)
    questions = infos(ds)
    assert len(questions) == len(fake.VQA_BINARY)  # only the yes/no lines
    for q, (image, text) in zip(questions, fake.VQA_BINARY):
        names = [osp.basename(p) for p in q['image_paths']]
        assert q['texts'] == [text] and q['retrieval'] == 'image' and q['target'] == 0
        assert q['subset'] == 'vqa_binary' and names[0] == image
        assert len(names) == 10 and len(set(names)) == 10  # 9 distinct negatives, not the image
        assert set(names[1:]) <= {i for i, _ in fake.VQA_BINARY}  # images of the kept lines
    assert infos(VQABinaryDataset(root, image_size=S)) == questions
    assert infos(VQABinaryDataset(root, image_size=S, negative_seed=3)) != questions
    item = ds[0]
    keys = [int(osp.basename(p)[13:25]) for p in item['image_paths']]
    assert_images_are(item['images'], keys)
    others = infos(VQABinaryDataset(root, question_type='others', num_negatives=1,
                                    image_size=S))
    assert [q['texts'] for q in others] == [['what colour is the bus? The bus is red.'],
                                            ['what is it? It is a cat.']]
    assert [[osp.basename(p)[-7:-4] for p in q['image_paths']] for q in others] == \
        [['200', '202'], ['202', '200']]  # the one other image is each one's negative
    assert len(infos(VQABinaryDataset(root, question_type=None, image_size=S))) == 15
    with pytest.raises(ITMDataError, match=r'only 2 distinct images; num_negatives=9'):
        VQABinaryDataset(_two_image_release(root), image_size=S)


def _two_image_release(root):
    """A copy of the VQA fake whose binary lines use two images only."""
    import shutil
    copy = root + '_two'
    if not osp.isdir(copy):
        shutil.copytree(root, copy)
        with open(osp.join(copy, 'test3.txt'), 'w') as f:
            f.write('COCO_val2014_000000000100.jpg*The question is asking about yes or no: a\n'
                    'COCO_val2014_000000000101.jpg*The question is asking about yes or no: b\n')
    return copy


def test_vqa_binary_reads_the_reference_negatives_cache(releases):
    root = releases['vqa']['root']
    ds = VQABinaryDataset(root, negatives_json='test3_neg_samples.json', image_size=S)
    cached = releases['vqa']['cache']
    assert [(q['texts'], [osp.basename(p) for p in q['image_paths']]) for q in infos(ds)] == \
        [([text], [image] + negatives) for image, negatives, text in cached]
    bad = osp.join(root, 'bad_cache.json')
    with open(bad, 'w') as f:
        f.write('[["a.jpg", ["a.jpg"], "t"]]')
    with pytest.raises(ITMDataError, match=r'entry 0 is'):
        VQABinaryDataset(root, negatives_json='bad_cache.json', image_size=S)


def test_vqa_other_is_text_retrieval_and_train_few_shot(releases):
    root = releases['vqa']['root']
    ds = VQAOtherDataset(root, image_size=S)
    assert len(ds) == 3
    row = releases['vqa']['test'][1]
    item = ds[1]
    assert item['texts'] == [row[0]] + row[2:] and len(item['texts']) == 10
    assert (item['retrieval'], item['target'], item['subset']) == ('text', 0, 'vqa_other')
    assert osp.basename(item['image_paths'][0]) == 'COCO_val2014_000000000101.jpg'
    assert_images_are(item['images'], [101])
    train = VQAOtherDataset(root, split='train', few_shot=0.05, image_size=S)
    assert len(train) == 1 and train[0]['texts'][0] == releases['vqa']['train'][0][0]
    assert osp.basename(train[0]['image_paths'][0]) == 'COCO_train2014_000000000300.jpg'
    with pytest.raises(ITMDataError, match="split='val'"):
        VQAOtherDataset(root, split='val')


# ------------------------------------------------------------------------------ Winoground

def test_winoground_pairwise_questions(releases):
    ds = WinogroundDataset(releases['winoground']['root'], image_size=S)
    assert len(ds) == 3
    item = ds[1]
    example = fake.WINOGROUND[1]
    assert item['texts'] == [example['caption_0'], example['caption_1']]
    assert (item['retrieval'], item['target'], item['subset'], item['question_id']) == \
        ('pairwise', 0, 'Relation', '1')
    assert_images_are(item['images'], ['ex_1_img_0', 'ex_1_img_1'], atol=1e-6)  # PNG: exact


def test_winoground_missing_image_names_the_layout(tmp_path):
    root = fake.write_winoground(str(tmp_path / 'winoground'))['root']
    os.remove(osp.join(root, 'images', 'ex_2_img_1.png'))
    with pytest.raises(ITMDataError, match=r"ex_2_img_1\.png: expected the image 'ex_2_img_1' "
                                           r"of line 3 of .*examples\.jsonl, but it does not "
                                           r"exist\. Winoground is read as laid out like this: "
                                           r"DATA_ROOT/examples\.jsonl"):
        WinogroundDataset(root, image_size=S)


def test_items_are_pseudo_collated_as_a_list_of_questions(releases):
    from mmengine.dataset import pseudo_collate
    ds = ComVGDataset(releases['comvg']['root'], image_size=S)
    batch = pseudo_collate([ds[0], ds[1]])
    assert batch['question_id'] == ['0', '1'] and len(batch['images']) == 2
    assert np.isclose(float(batch['images'][0].max()), float(ds[0]['images'].max()))
