"""The PCK metric of semantic correspondence: several reference protocols side by side.

The one rule: a run names its protocols (presets of :data:`~.pck.PRESETS` or explicit option
dicts) and every number it reports carries the protocol's name, so a DIFT-style number is never
mistaken for an SD-DINO-style one. ``dump_pairs`` writes every pair's keypoints, prediction and
thresholds so anyone can recompute the numbers.
"""
import json
from collections import OrderedDict

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.registry import METRICS
from prettytable import PrettyTable

from .pck import (AVERAGING_LABELS, aggregate, pair_distances, per_category, reference_length,
                  resolve_options, within)


def _numpy(value, dtype=np.float64):
    if value is None:
        return None
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _listed(value):
    value = _numpy(value)
    return None if value is None else value.tolist()


def _alpha_key(alpha):
    return f'pck@{alpha:g}'


@METRICS.register_module()
class PCKMetric(BaseMetric):
    """PCK@alpha of predicted target keypoints under one or more named protocols (in percent).

    Each protocol is a preset name (``'dift'``, ``'sd_dino'``, ``'geoaware_point'``,
    ``'geoaware_image'``, ``'distilldift_release'``, ``'hyperfeatures'``,
    ``'hyperfeatures_img'``) or a dict of options (``name``, optionally ``preset`` to start from,
    and any of ``threshold``, ``frame``, ``frame_size``, ``threshold_scale``, ``compare``,
    ``averaging``, ``alphas``; see :mod:`correspondence.evaluation.pck`).

    Metrics: ``'{protocol}/pck@{alpha}/{averaging}'`` with averaging ``per_point``,
    ``per_image``, ``category_mean`` or ``category_weighted`` as the protocol lists; with
    ``per_category`` also ``'{protocol}/pck@{alpha}/{per_point|per_image}/{category}'``. The
    side-by-side table of protocols and the per-category table are written to the log.

    Args:
        alphas (sequence of float): thresholds' fractions, for protocols that give none.
        presets (sequence of str | dict): the protocols. Defaults to ``('dift', )``.
        per_category (bool): report and tabulate each category. Defaults to True.
        dump_pairs (str | None): a JSON file written (atomically) with every pair's record:
            pair id, category, image sizes, boxes, source/target/predicted keypoints (original
            pixels) and, per protocol, the frame distances and the threshold per alpha.
    Each entry of ``data_samples`` is a dict as the data contract (``correspondence/README.md``) says, with
    ``pred_kps`` (``[K, 2]``, target image, original pixels).
    """

    def __init__(self, alphas=(0.1, ), presets=('dift', ), per_category=True, dump_pairs=None,
                 collect_device='cpu', prefix=None, **kwargs):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if isinstance(presets, (str, dict)):
            presets = [presets]
        self.protocols = [resolve_options(spec) for spec in presets]
        names = [p['name'] for p in self.protocols]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f'PCK protocols {duplicated} appear more than once in presets; give '
                             "each custom option dict its own name=...")
        if not self.protocols:
            raise ValueError('PCKMetric needs at least one protocol in presets.')
        self.alphas = tuple(float(a) for a in alphas)
        if not self.alphas:
            raise ValueError('PCKMetric needs at least one alpha in alphas, e.g. (0.1, ).')
        self.per_category = per_category
        self.dump_pairs = dump_pairs

    def protocol_alphas(self, protocol):
        return protocol['alphas'] if protocol['alphas'] is not None else self.alphas

    def process(self, data_batch, data_samples):
        """Store each pair's keypoints with, per protocol, its frame distances and the
        threshold's reference length (``alpha`` applies in :meth:`compute_metrics`)."""
        for sample in data_samples:
            if not isinstance(sample, dict):
                sample = sample.to_dict()
            if 'pred_kps' not in sample:
                raise ValueError(f'the data sample of pair {sample.get("pair_id", "?")!r} has no '
                                 "pred_kps; the model must return the predicted target "
                                 'keypoints [K, 2] in original pixels as data_samples[i]'
                                 "['pred_kps'].")
            record = dict(
                pair_id=sample.get('pair_id'),
                category=str(sample.get('category')),
                src_imsize=_listed(sample.get('src_imsize')),
                trg_imsize=_listed(sample.get('trg_imsize')),
                src_bbox=_listed(sample.get('src_bbox')),
                trg_bbox=_listed(sample.get('trg_bbox')),
                src_kps=_numpy(sample.get('src_kps')),
                trg_kps=_numpy(sample.get('trg_kps')),
                pred_kps=_numpy(sample.get('pred_kps')),
                protocols={})
            for protocol in self.protocols:
                frame = dict(frame=protocol['frame'], frame_size=protocol['frame_size'])
                record['protocols'][protocol['name']] = dict(
                    distances=pair_distances(sample, **frame),
                    length=reference_length(sample, protocol['threshold'],
                                            threshold_scale=protocol['threshold_scale'],
                                            **frame))
            self.results.append(record)

    def correctness(self, results, protocol, alpha):
        """Per-pair ``dict(category, correct)`` of one protocol at one alpha."""
        name = protocol['name']
        return [dict(category=r['category'],
                     correct=within(r['protocols'][name]['distances'],
                                    alpha * r['protocols'][name]['length'],
                                    protocol['compare'])) for r in results]

    @staticmethod
    def within_category_modes(protocol):
        """``'point'`` and/or ``'image'``: how each category is summarised for this protocol."""
        modes = []
        if set(protocol['averaging']) & {'point', 'category_mean', 'category_weighted'}:
            modes.append('point')
        if 'image' in protocol['averaging']:
            modes.append('image')
        return modes

    def compute_metrics(self, results):
        metrics = OrderedDict()
        categories = OrderedDict()
        for r in results:
            categories.setdefault(r['category'], [0, 0])
            categories[r['category']][0] += 1
            categories[r['category']][1] += len(r['protocols'][self.protocols[0]['name']]
                                                ['distances'])
        per_cat_values = OrderedDict()
        for protocol in self.protocols:
            for alpha in self.protocol_alphas(protocol):
                rows = self.correctness(results, protocol, alpha)
                head = f"{protocol['name']}/{_alpha_key(alpha)}"
                for mode in protocol['averaging']:
                    metrics[f'{head}/{AVERAGING_LABELS[mode]}'] = 100 * aggregate(rows, mode)
                if self.per_category:
                    for mode in self.within_category_modes(protocol):
                        column = f'{head}/{AVERAGING_LABELS[mode]}'
                        per_cat_values[column] = {
                            cat: 100 * v for cat, v in per_category(rows, mode).items()}
                        for cat, value in per_cat_values[column].items():
                            metrics[f'{column}/{cat}'] = value
        print_log('\n' + self.format_tables(metrics, per_cat_values, categories),
                  logger='current')
        if self.dump_pairs:
            self.write_pairs(self.dump_pairs, results)
        return metrics

    def format_tables(self, metrics, per_cat_values, categories):
        """The side-by-side table of protocols and, with ``per_category``, one per-category table
        per alpha, as one printable string (values in percent)."""
        columns = []
        for protocol in self.protocols:
            for alpha in self.protocol_alphas(protocol):
                for mode in protocol['averaging']:
                    column = (_alpha_key(alpha), AVERAGING_LABELS[mode])
                    if column not in columns:
                        columns.append(column)
        summary = PrettyTable()
        summary.field_names = ['protocol'] + [f'{a} {label}' for a, label in columns] + [
            'frame', 'threshold', 'compare']
        for protocol in self.protocols:
            row = [protocol['name']]
            for alpha_key, label in columns:
                key = f"{protocol['name']}/{alpha_key}/{label}"
                row.append(f'{metrics[key]:.2f}' if key in metrics else '-')
            frame = protocol['frame'] + (f" {protocol['frame_size']}"
                                         if protocol['frame_size'] is not None else '')
            scale = ('' if protocol['threshold_scale'] == 'frame'
                     or protocol['frame'] == 'original' else
                     f" ({protocol['threshold_scale']}-scaled)")
            summary.add_row(row + [frame, protocol['threshold'] + scale, protocol['compare']])
        summary.align['protocol'] = 'l'
        text = f'PCK (%) by protocol:\n{summary.get_string()}'
        by_alpha = OrderedDict()
        for column, values in per_cat_values.items():
            name, alpha_key, label = column.split('/')
            by_alpha.setdefault(alpha_key, OrderedDict())[f'{name} {label}'] = values
        for alpha_key, tables in by_alpha.items():
            table = PrettyTable()
            table.field_names = ['category', 'pairs', 'keypoints'] + list(tables)
            for cat, (pairs, kps) in categories.items():
                table.add_row([cat, pairs, kps] + [
                    f'{values[cat]:.2f}' if cat in values else '-' for values in tables.values()])
            table.align['category'] = 'l'
            text += f'\n{alpha_key.upper()} (%) per category:\n{table.get_string()}'
        return text

    def pair_records(self, results=None):
        """JSON-ready per-pair records: everything needed to recompute every reported number.

        Each record: ``pair_id``, ``category``, ``src_imsize``, ``trg_imsize``, ``src_bbox``,
        ``trg_bbox``, ``src_kps``, ``trg_kps``, ``pred_kps`` (original pixels) and ``protocols``:
        ``{name: {frame, frame_size, compare, distances: [K] in the frame, thresholds:
        {'pck@alpha': alpha * L in the frame}}}``. A keypoint is correct when ``distance
        compare threshold``.
        """
        results = self.results if results is None else results
        options = {p['name']: p for p in self.protocols}
        records = []
        for r in results:
            record = {k: (_listed(v) if isinstance(v, np.ndarray) else v)
                      for k, v in r.items() if k != 'protocols'}
            record['protocols'] = {}
            for name, values in r['protocols'].items():
                protocol = options[name]
                record['protocols'][name] = dict(
                    frame=protocol['frame'], frame_size=protocol['frame_size'],
                    compare=protocol['compare'],
                    distances=_listed(values['distances']),
                    thresholds={_alpha_key(a): float(a * values['length'])
                                for a in self.protocol_alphas(protocol)})
            records.append(record)
        return records

    def write_pairs(self, path, results=None):
        """Write ``{'protocols': {name: options}, 'alphas': [...], 'pairs': [records]}`` to
        ``path`` as JSON, atomically."""
        from common.io import atomic_write_bytes
        payload = dict(
            alphas=list(self.alphas),
            protocols={p['name']: dict(p, averaging=list(p['averaging']),
                                       alphas=list(self.protocol_alphas(p)))
                       for p in self.protocols},
            pairs=self.pair_records(results))
        atomic_write_bytes(path, json.dumps(payload, indent=1).encode('utf-8'))
        print_log(f'PCK: wrote {len(payload["pairs"])} pairs to {path}', logger='current')
