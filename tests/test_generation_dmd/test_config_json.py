"""EDM network folders write strict JSON: non-finite floats encoded, old Infinity files still read.

EDMPrecond's default ``sigma_max=inf`` used to reach ``config.json`` as the token ``Infinity``,
which Python's ``json`` accepts but standard JSON (and most other parsers) refuses.
"""
import json
import math

import pytest
import torch

from generation_dmd.networks import EDMLoadError, EDMPrecond, load_edm, save_edm
from generation_dmd.networks.loading import dumps_json, encode_nonfinite, loads_json

TINY_SONG = dict(model_channels=16, channel_mult=[1], num_blocks=1, attn_resolutions=[],
                 dropout=0.0)


def strict_loads(text):
    """A JSON parser that refuses the non-standard constants Infinity, -Infinity and NaN."""
    def refuse(token):
        raise ValueError(f'non-standard JSON constant {token}')
    return json.loads(text, parse_constant=refuse)


def test_strict_parser_refuses_the_old_tokens():
    with pytest.raises(ValueError, match='non-standard JSON constant Infinity'):
        strict_loads(json.dumps({'sigma_max': float('inf')}))


def test_edm_precond_with_infinite_sigma_max_round_trips(tmp_path):
    torch.manual_seed(0)
    net = EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG).eval()
    assert net.sigma_max == float('inf')  # EDM's default
    save_edm(net, tmp_path / 'net')
    text = (tmp_path / 'net' / 'config.json').read_text()
    assert 'Infinity' not in text
    on_disk = strict_loads(text)
    assert on_disk['init_kwargs']['sigma_max'] == {'__float__': 'inf'}
    assert on_disk['init_kwargs']['sigma_min'] == 0
    loaded = load_edm(tmp_path / 'net')
    assert loaded.sigma_max == float('inf') and loaded.init_kwargs == net.init_kwargs
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 20.0])
    assert torch.equal(loaded(x, sigma), net(x, sigma))


def test_old_config_with_infinity_token_is_still_read(tmp_path):
    net = EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG)
    save_edm(net, tmp_path / 'net')
    path = tmp_path / 'net' / 'config.json'
    old = json.dumps({'class_name': 'EDMPrecond', 'init_kwargs': net.init_kwargs})  # as before
    assert '"sigma_max": Infinity' in old
    path.write_text(old)
    assert load_edm(tmp_path / 'net').sigma_max == float('inf')


def test_every_non_finite_float_round_trips_nested():
    value = {'a': [1.5, float('-inf'), (float('nan'), 2)], 'b': {'c': float('inf')}, 'd': 'inf'}
    text = dumps_json(value, indent=None)
    assert text == ('{"a": [1.5, {"__float__": "-inf"}, [{"__float__": "nan"}, 2]], '
                    '"b": {"c": {"__float__": "inf"}}, "d": "inf"}')
    strict_loads(text)
    back = loads_json(text)
    assert back['a'][0] == 1.5 and back['a'][1] == float('-inf') and math.isnan(back['a'][2][0])
    assert back['a'][2][1] == 2 and back['b'] == {'c': float('inf')} and back['d'] == 'inf'
    # only a one-key {"__float__": ...} object is a float; anything else stays a dict
    assert loads_json('{"__float__": "inf", "x": 1}') == {'__float__': 'inf', 'x': 1}
    assert encode_nonfinite([1, 'x', None]) == [1, 'x', None]


def test_bad_float_tag_is_one_paragraph(tmp_path):
    save_edm(EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG), tmp_path / 'net')
    path = tmp_path / 'net' / 'config.json'
    path.write_text(path.read_text().replace('"inf"', '"infinity"'))
    with pytest.raises(EDMLoadError, match=r'config\.json could not be read as JSON '
                                           r'\(\{"__float__": \'infinity\'\} is not an encoded '
                                           r'float: expected "inf", "-inf" or "nan"\)'):
        load_edm(tmp_path / 'net')
