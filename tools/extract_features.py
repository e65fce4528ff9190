"""Extract diffusion-teacher features of a folder of images into one safetensors file.

    python tools/extract_features.py CONFIG --images DIR --out FILE.safetensors
        [--batch-size N] [--device cpu|cuda] [--cfg-options k=v ...]
    python tools/extract_features.py CONFIG --list-layers

CONFIG defines ``teacher = dict(type='DiffusionTeacher', ...)``. Every .png/.jpg/.jpeg in DIR,
sorted by file name, is read as RGB, resized to the teacher's native input size (skipped when it
already has it) and scaled to [-1, 1]. The output holds one float32 tensor per key
``'{layer}@{t}'`` of shape [N, C, H, W] and the metadata entry ``images``: a JSON list of the
file names in order.

``--cfg-options`` follows tools/train.py's rules: every KEY must exist in the config (a typo
fails with the nearest existing keys, exit 2); ``+KEY=VALUE`` adds a key on purpose. The
arguments are parsed before torch, mmengine, diffusers or ``common`` is imported.
"""
import json
import os
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/extract_features.py'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


class ExtractionError(RuntimeError):
    """A user-fixable problem with the inputs of this tool."""


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file that defines `teacher`')
    parser.add_argument('--images', help='folder of .png/.jpg/.jpeg images')
    parser.add_argument('--out', help='output .safetensors file')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--list-layers', action='store_true',
                        help='print the module paths of the teacher UNet and exit')
    _cli.add_cfg_options_arg(parser, help='override config settings, e.g. '
                             'teacher.timesteps=[50] (every KEY must exist; "+KEY" adds one)')
    args = parser.parse_args(argv)
    if not args.list_layers and not (args.images and args.out):
        parser.error('--images and --out are required (or use --list-layers)')
    return args


def list_images(folder):
    if not os.path.isdir(folder):
        raise ExtractionError(f'--images {folder!r} is not a folder.')
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ExtractionError(f'No .png/.jpg/.jpeg images in {folder!r}.')
    return names


def load_image(path, size):
    """RGB float tensor [3, H, W] in [-1, 1], resized to ``size`` (H, W) when it differs."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img = img.convert('RGB')
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BICUBIC)
            array = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ExtractionError(f'Cannot decode image {path!r} ({err}). Remove or replace the file '
                              f'and run again; no output was written.') from None
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def build_teacher(args):
    cfg = _cli.load_config(args.config, args.cfg_options)  # imports common: DiffusionTeacher
    from mmengine.registry import MODELS
    if 'teacher' not in cfg:
        raise ExtractionError(f'{args.config!r} defines no `teacher`; add '
                              f"teacher = dict(type='DiffusionTeacher', pretrained=..., "
                              f'layers=[...], timesteps=[...]) or inherit a base from '
                              f'common/configs/_base_/teachers/.')
    return MODELS.build(cfg.teacher)


def extract(teacher, folder, names, batch_size, device):
    import torch
    from tqdm import tqdm
    teacher.to(device)
    outputs = {k: [] for k in teacher.feature_keys}
    size = teacher.native_size
    with tqdm(total=len(names), desc='extracting', unit='img') as bar:
        for start in range(0, len(names), batch_size):
            batch = names[start:start + batch_size]
            x = torch.stack([load_image(os.path.join(folder, n), size) for n in batch])
            for key, value in teacher(x.to(device)).items():
                outputs[key].append(value.float().cpu())
            bar.update(len(batch))
    return {k: torch.cat(v).contiguous() for k, v in outputs.items()}


def main(argv=None):
    args = parse_args(argv)
    try:
        teacher = build_teacher(args)
        if args.list_layers:
            print('\n'.join(teacher.list_layers()))
            return 0
        names = list_images(args.images)
        features = extract(teacher, args.images, names, args.batch_size, args.device)
        from safetensors.torch import save_file

        from common.io import atomic_path
        with atomic_path(args.out) as tmp:
            save_file(features, tmp, metadata=dict(images=json.dumps(names)))
    except (_cli.UsageError, ExtractionError, ValueError, OSError) as err:
        print(f'{PROG}: error: {err}', file=sys.stderr)
        return 2
    shapes = ', '.join(f'{k}: {list(v.shape)}' for k, v in features.items())
    print(f'wrote {len(names)} images to {args.out} ({shapes})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
