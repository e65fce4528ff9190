"""Start the image-text matching playground: a web page scoring images against captions with DSD.

    python tools/itm_playground.py PIPELINE [--lora DIR] [--port 7860] [--host 127.0.0.1]
        [--timesteps 10] [--device cpu|cuda] [--image-size S] [--max-candidates 10]
        [--max-image-mb 10]

PIPELINE is a Stable Diffusion pipeline folder (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``, e.g. ``stabilityai/stable-diffusion-2-1-base`` downloaded with
``huggingface-cli download``) or a hub id on a machine that is online; ``--lora DIR`` a folder of
LoRA weights saved by prompt learning (``tools/train.py`` on an ``image_text_matching`` config).
Open the printed address in a browser: upload one image and type several captions (one per line),
or upload several images and type one caption, and press Score. Each candidate gets its DSD,
attention and ITM scores (``DSDScorer``, ``--timesteps`` evenly spaced timesteps in [10, 990),
common noise from a fixed seed), and the best match its cross-attention heat map.

The one rule: the server listens on ``--host`` (default 127.0.0.1, this machine only); it has no
authentication, so expose it (``--host 0.0.0.0``) only on a network you trust. Arguments and the
PIPELINE / ``--lora`` paths are checked before torch, diffusers or ``common`` is imported; one log
line per request goes to stderr. Exit codes: 0 stopped with Ctrl+C, 1 the model could not be
loaded or the port not opened, 2 a usage error.
"""
import os
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/itm_playground.py'
SD_PARTS = ('unet', 'text_encoder', 'tokenizer', 'scheduler')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('pipeline', metavar='PIPELINE',
                        help='Stable Diffusion pipeline folder (or a hub id when online)')
    parser.add_argument('--lora', metavar='DIR', help='folder of LoRA weights from prompt '
                        'learning (*.safetensors), applied to the UNet')
    parser.add_argument('--port', type=int, default=7860, help='TCP port (default 7860; 0 '
                        'picks a free one)')
    parser.add_argument('--host', default='127.0.0.1', help='address to listen on (default '
                        '127.0.0.1: this machine only; 0.0.0.0 for every interface)')
    parser.add_argument('--timesteps', type=int, default=10, help='timesteps per score, '
                        'evenly spaced in [10, 990) (default 10; the reference demo uses 50)')
    parser.add_argument('--device', default=None, help="'cpu' or 'cuda[:N]' (default: cuda "
                        'when available)')
    parser.add_argument('--image-size', type=int, default=None, metavar='S',
                        help="side images are stretched to before scoring (default: the "
                        "model's, 512 for SD 2.1-base)")
    parser.add_argument('--max-candidates', type=int, default=10,
                        help='most captions per image or images per caption (default 10)')
    parser.add_argument('--max-image-mb', type=float, default=10.0,
                        help='largest upload per image, in MiB (default 10)')
    args = parser.parse_args(argv)
    if args.timesteps < 1:
        parser.error(f'--timesteps {args.timesteps}: use at least 1')
    if not 0 <= args.port <= 65535:
        parser.error(f'--port {args.port}: use 0..65535 (0 picks a free port)')
    if args.device is not None and args.device.split(':')[0] not in ('cpu', 'cuda'):
        parser.error(f"--device {args.device}: use 'cpu' or 'cuda' (optionally 'cuda:N')")
    if args.image_size is not None and not 8 <= args.image_size <= 2048:
        parser.error(f'--image-size {args.image_size}: use 8..2048 pixels')
    if args.max_candidates < 1:
        parser.error(f'--max-candidates {args.max_candidates}: use at least 1')
    if not 0 < args.max_image_mb <= 200:
        parser.error(f'--max-image-mb {args.max_image_mb}: use a size in (0, 200] MiB')
    return args


def check_paths(args):
    """PIPELINE and ``--lora`` as the loader will need them, checked before any heavy import."""
    path = osp.expanduser(args.pipeline)
    if osp.isdir(path):
        missing = [p for p in SD_PARTS if not osp.isdir(osp.join(path, p))]
        if missing:
            raise _cli.UsageError(
                f'PIPELINE {args.pipeline!r} is a folder but not a text-conditioned diffusion '
                f'pipeline: it lacks {", ".join(p + "/" for p in missing)} (it has '
                f'{", ".join(sorted(os.listdir(path))[:8]) or "nothing"}). Point it at a Stable '
                f'Diffusion pipeline folder as diffusers saves it (unet/, vae/, text_encoder/, '
                f'tokenizer/, scheduler/, model_index.json).')
    elif path.startswith(('.', '/', '~')) or path.count('/') != 1 or osp.exists(path):
        raise _cli.UsageError(
            f'PIPELINE {args.pipeline!r} is not a folder (relative paths are resolved from '
            f'{os.getcwd()!r}). Give a Stable Diffusion pipeline folder, e.g. one downloaded '
            f'with `huggingface-cli download stabilityai/stable-diffusion-2-1-base --local-dir '
            f'checkpoints/sd21-base`, or a hub id owner/name on a machine that is online.')
    if args.lora is not None and not osp.exists(osp.expanduser(args.lora)):
        raise _cli.UsageError(
            f'--lora {args.lora!r} does not exist (relative paths are resolved from '
            f'{os.getcwd()!r}); pass the folder of LoRA weights that prompt learning saved '
            f'(with pytorch_lora_weights.safetensors) or such a .safetensors file, or leave '
            f'--lora out to score with the plain model.')


def _main(args):
    check_paths(args)
    import logging

    import torch

    from image_text_matching.playground import Limits, build_playground, make_server
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise _cli.RunError(f'--device {device} but torch sees no CUDA device; run on a machine '
                            f'with a GPU or pass --device cpu.')
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s',
                        stream=sys.stderr)
    limits = Limits(max_candidates=args.max_candidates,
                    max_image_bytes=int(args.max_image_mb * 1024 * 1024),
                    max_request_bytes=int((args.max_candidates * args.max_image_mb * 4 / 3 + 1)
                                          * 1024 * 1024))
    print(f'{PROG}: loading {args.pipeline}' + (f' + LoRA {args.lora}' if args.lora else '') +
          f' on {device} ...', file=sys.stderr, flush=True)
    from image_text_matching.models.lora import LoRAError
    try:
        playground = build_playground(args.pipeline, lora=args.lora, timesteps=args.timesteps,
                                      device=device, image_size=args.image_size, limits=limits)
    except LoRAError as err:
        raise _cli.RunError(f'--lora {args.lora!r}: {err}') from err
    try:
        server = make_server(playground, args.host, args.port)
    except OSError as err:
        raise _cli.RunError(
            f'Could not listen on {args.host}:{args.port} ({err.strerror or err}); another '
            f'program may use the port: pass --port N (0 picks a free one).') from err
    host, port = server.server_address[:2]
    shown = 'localhost' if host in ('127.0.0.1', '0.0.0.0') else host
    print(f'{PROG}: serving {playground.model_name} ({args.timesteps} timesteps, '
          f'{playground.image_size} px) on http://{shown}:{port}/ - press Ctrl+C to stop',
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f'{PROG}: stopped', file=sys.stderr)
    finally:
        server.server_close()


def main(argv=None):
    """Run the command line; returns the exit code (0, 1 or 2) instead of raising."""
    return _cli.run_cli(PROG, lambda argv: _main(parse_args(argv)), argv)


if __name__ == '__main__':
    sys.exit(main())
