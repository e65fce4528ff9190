"""Tiny fake releases of ComVG, RefCOCOg (REFER), VQAv2 (DSD's files) and Winoground.

Each ``write_*(root)`` lays out under ``root`` the files of the release with their real names and
formats (CSV columns, REFER's pickle, ``test3.txt`` lines, ``examples.jsonl``) and small solid-
colour images (8 x 8 or 8 x 6; JPEG or PNG as the release), and returns what a reader must
find, so tests compare exact values. :func:`colour` gives an image id's colour: a loaded image is
that colour everywhere, which tells which file a candidate came from.
"""
import csv
import json
import os
import os.path as osp
import pickle


def colour(key):
    """The solid RGB colour of the fake image ``key`` (an int or a str)."""
    n = key if isinstance(key, int) else sum((i + 1) * ord(c) for i, c in enumerate(str(key)))
    return (n * 37 % 200 + 20, n * 91 % 200 + 20, n * 13 % 200 + 20)


def image(path, key, size=(8, 8)):
    from PIL import Image
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.new('RGB', size, colour(key)).save(path, quality=100)
    return path


def _csv(path, header, rows):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------- ComVG
COMVG_HEADER = ['id', 'sentence', 'pos_triplet', 'neg_triplet', 'pos_image_id', 'neg_image_id',
                'neg_value']
COMVG_TEST = [  # id, sentence, pos image, neg image, neg_value
    (0, 'man riding horse', 180, 411, 'subject'),
    (1, 'man riding horse', 180, 414, 'object'),
    (2, 'man feeding horse', 1251, 180, 'verb'),
    (3, 'dog on bed', 411, 414, 'object'),
    (4, 'cat on bed', 414, 411, 'subject'),
    (5, 'boy holding kite', 1251, 414, 'object'),
]


def write_comvg(root, train_rows=40):
    test = [[i, s, 'a,b,c', 'a,b,d', p, n, v] for i, s, p, n, v in COMVG_TEST]
    _csv(osp.join(root, 'compositional_visual_genome.csv'), COMVG_HEADER, test)
    for key in (180, 411, 414, 1251):
        image(osp.join(root, 'vg_concept', f'{key}.jpg'), key)
    train = [[100 + i, f'sentence {i}', 'a,b,c', 'a,b,d', 2000 + i % 3, 2003 + i % 2,
              ('subject', 'object', 'verb')[i % 3]] for i in range(train_rows)]
    _csv(osp.join(root, 'comvg_train.csv'), COMVG_HEADER, train)
    for key in range(2000, 2005):
        image(osp.join(root, 'VG_100K', f'{key}.jpg'), key, size=(8, 6))
    return dict(root=root, test=COMVG_TEST, train=train)


# ------------------------------------------------------------------------------- RefCOCOg
def refcocog_refs(num_refs=10):
    """REFER-style refs: ref r (image 500 + r // 2) has the sentences 'object r a'/'object r b';
    refs 8 and 9 share the text 'the man' (a negative must never equal its positive's text)."""
    refs = []
    for r in range(num_refs):
        texts = [f'object {r} a', f'object {r} b']
        if r in (8, 9):
            texts[1] = 'the man'
        refs.append(dict(
            ref_id=r, ann_id=1000 + r, image_id=500 + r // 2, category_id=1, split='train',
            file_name=f'COCO_train2014_{500 + r // 2:012d}_{1000 + r}.jpg',
            sent_ids=[10 * r, 10 * r + 1],
            sentences=[dict(tokens=t.split(), raw=t, sent_id=10 * r + k, sent=t)
                       for k, t in enumerate(texts)]))
    return refs


def write_refcocog(root, num_refs=10):
    refs = refcocog_refs(num_refs)
    os.makedirs(root, exist_ok=True)
    with open(osp.join(root, 'refs(google).p'), 'wb') as f:
        pickle.dump(refs, f, protocol=2)  # REFER's files were written by Python 2
    images = sorted({ref['image_id'] for ref in refs})
    instances = dict(
        images=[dict(id=i, file_name=f'COCO_train2014_{i:012d}.jpg', width=8, height=8)
                for i in images],
        annotations=[dict(id=ref['ann_id'], image_id=ref['image_id'], category_id=1,
                          bbox=[0, 0, 4, 4]) for ref in refs],
        categories=[dict(id=1, name='person')])
    with open(osp.join(root, 'instances.json'), 'w', encoding='utf-8') as f:
        json.dump(instances, f)
    for i in images:
        image(osp.join(root, 'images', 'train2014', f'COCO_train2014_{i:012d}.jpg'), i)
    return dict(root=root, refs=refs)


# ------------------------------------------------------------------------------- VQAv2
def _coco_val(i):
    return f'COCO_val2014_{i:012d}.jpg'


VQA_BINARY = [(_coco_val(100 + i % 11), f'is there thing {i}? there is thing {i}')
              for i in range(12)]  # 12 statements over 11 images (image 100 twice)


def write_vqa(root, train_rows=20):
    lines = [f'{img}*The question is asking about yes or no: {text}' for img, text in VQA_BINARY]
    lines.insert(3, f'{_coco_val(200)}*The question is asking about others: what colour is the '
                    f'bus? The bus is red.')
    lines.insert(5, f'{_coco_val(202)}*The question is asking about others: what is it? It is '
                    f'a cat.')
    lines.insert(7, f'{_coco_val(201)}*The question is asking about numbers: how many dogs? '
                    f'there are 2 dogs.')
    os.makedirs(root, exist_ok=True)
    with open(osp.join(root, 'test3.txt'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    cache = [[_coco_val(100), [_coco_val(100 + k) for k in range(1, 10)], 'cached statement'],
             [_coco_val(105), [_coco_val(101)] * 9, 'another cached statement']]
    with open(osp.join(root, 'test3_neg_samples.json'), 'w', encoding='utf-8') as f:
        json.dump(cache, f)
    for i in list(range(100, 111)) + [200, 201, 202]:
        image(osp.join(root, 'val2014', _coco_val(i)), i)
    header = ['sentence', 'pos_image_id'] + [f'neg_sentence_{k}' for k in range(1, 10)]
    test = [[f'what is {q}? answer {q}', 100 + q] + [f'what is {q}? wrong {k}'
                                                     for k in range(1, 10)] for q in range(3)]
    _csv(osp.join(root, 'vqa_text_test.csv'), header, test)
    train = [[f'why {q}? because {q}', 300 + q % 2] + [f'why {q}? not {k}' for k in range(1, 10)]
             for q in range(train_rows)]
    _csv(osp.join(root, 'vqa_text_train.csv'), header, train)
    for i in (300, 301):
        image(osp.join(root, 'train2014', f'COCO_train2014_{i:012d}.jpg'), i)
    return dict(root=root, lines=lines, binary=VQA_BINARY, cache=cache, test=test, train=train)


# ------------------------------------------------------------------------------- Winoground
WINOGROUND = [
    dict(id=0, caption_0='an old person kisses a young person',
         caption_1='a young person kisses an old person', collapsed_tag='Object'),
    dict(id=1, caption_0='the dog chases the cat', caption_1='the cat chases the dog',
         collapsed_tag='Relation'),
    dict(id=2, caption_0='a red cup on a blue plate', caption_1='a blue cup on a red plate',
         collapsed_tag='Object'),
]


def write_winoground(root):
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    with open(osp.join(root, 'examples.jsonl'), 'w', encoding='utf-8') as f:
        for example in WINOGROUND:
            record = dict(example, image_0=f'ex_{example["id"]}_img_0',
                          image_1=f'ex_{example["id"]}_img_1', tag='', secondary_tag='',
                          num_main_preds=1)
            f.write(json.dumps(record) + '\n')
            for k in (0, 1):
                image(osp.join(root, 'images', f'ex_{example["id"]}_img_{k}.png'),
                      f'ex_{example["id"]}_img_{k}')
    return dict(root=root, examples=WINOGROUND)


def write_all(root):
    """Every fake release under ``root/{comvg,refcocog,vqav2,winoground}``."""
    return dict(comvg=write_comvg(osp.join(root, 'comvg')),
                refcocog=write_refcocog(osp.join(root, 'refcocog')),
                vqa=write_vqa(osp.join(root, 'vqav2')),
                winoground=write_winoground(osp.join(root, 'winoground')))
