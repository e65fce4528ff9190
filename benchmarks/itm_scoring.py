"""Image-text scoring speed: ``DSDScorer.score`` (batched) vs the reference's loop, same scores.

The one rule: both sides score the very same questions (the same images, captions, seed and
timesteps) with the very same scorer in one run, every pair's three scores (DSD, attention, ITM)
must agree (``allclose``; the run fails otherwise), and the table prints questions/s of both and
their ratio, so a speed-up is never bought with different numbers.

  ours       ``DSDScorer.score(images, texts)``: all candidates x timesteps x {cond, uncond} of a
             question laid out as rows and cut into UNet calls of ``--max-batch`` rows (the empty
             text's rows once per image and timestep, not once per pair).
  reference  ``DSDScorer.reference_score``: DSD's / Diffusion-ITM's loop, one candidate and one
             timestep per UNet call, a batch of 2 (the empty text, the caption).

Questions (each kind ``--questions`` times, seeded random images and captions):
  text    text retrieval: 1 image, 10 captions (RefCOCOg / VQA-other in DSD);
  image   image retrieval: 2 images, 1 caption (ComVG in DSD).
Timing: median over ``--repeats`` passes over all questions of a kind after one untimed warm-up
pass, under ``torch.no_grad()``, the text encoder and VAE included (as a user pays them).

Models (random weights; speed does not depend on the values):
  tiny            (default, CPU) an SD 2.x-shaped pipeline shrunk to 64 px (4 blocks of 32/64
                  channels, cross-attention in down 0-2 / mid / up 1-3, a 2-layer text encoder with
                  77 tokens), saved in a temporary folder and loaded as a user would;
  sd21-base-arch  (GPU) Stable Diffusion 2.1-base's UNet / VAE / OpenCLIP-H text encoder built
                  from hand-written configs at 512 px (64 x 64 latents), epsilon prediction.
DSD's default layers (the last cross-attention block of down / mid / up) in both.

    python benchmarks/itm_scoring.py [--model tiny] [--timesteps 10] [--questions 3]
        [--repeats 3] [--max-batch 32] [--device cpu] [--json OUT.json]
    python benchmarks/itm_scoring.py --model sd21-base-arch --device cuda --dtype float16 \\
        [--timesteps 10] [--questions 2] [--repeats 2]
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
for _path in (os.path.join(ROOT, 'tools'), ROOT, _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)
import _cli  # noqa: E402

PROG = 'benchmarks/itm_scoring.py'
MODELS_ = ('tiny', 'sd21-base-arch')
KINDS = dict(text=(1, 10), image=(2, 1))  # kind -> (images, captions) per question
DTYPES = ('float32', 'float16', 'bfloat16')
# |ours - reference| tolerances of the scores (float32: summation order only).
TOLERANCE = dict(float32=dict(rtol=1e-4, atol=2e-4), float16=dict(rtol=1e-2, atol=5e-2),
                 bfloat16=dict(rtol=2e-2, atol=1e-1))
WORDS = ('a', 'red', 'blue', 'small', 'large', 'dog', 'cat', 'bird', 'car', 'house', 'tree',
         'sits', 'runs', 'near', 'under', 'on', 'the', 'green', 'old', 'boat', 'field', 'river')

# Epsilon-prediction DDPM betas of Stable Diffusion 2.1-base (scheduler_config.json).
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule='scaled_linear', prediction_type='epsilon')
ARCHS = {
    # stabilityai/stable-diffusion-2-1-base: unet/, vae/, text_encoder/ config.json, by hand.
    'sd21-base-arch': dict(
        image_size=512,
        unet=dict(sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=1024,
                  attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
                  block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                  down_block_types=('CrossAttnDownBlock2D', ) * 3 + ('DownBlock2D', ),
                  up_block_types=('UpBlock2D', ) + ('CrossAttnUpBlock2D', ) * 3),
        vae=dict(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                 down_block_types=('DownEncoderBlock2D', ) * 4,
                 up_block_types=('UpDecoderBlock2D', ) * 4, sample_size=512,
                 scaling_factor=0.18215, layers_per_block=2),
        text=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                  num_attention_heads=16, num_hidden_layers=23, max_position_embeddings=77,
                  hidden_act='gelu', projection_dim=512, bos_token_id=0, eos_token_id=1,
                  pad_token_id=1),
        scheduler=SD_SCHEDULER),
    # The same layout shrunk for a CPU: 64 px (8 x 8 latents), 32/64 channels, 2 text layers.
    'tiny': dict(
        image_size=64,
        unet=dict(sample_size=8, in_channels=4, out_channels=4, cross_attention_dim=32,
                  attention_head_dim=(2, 4, 4, 4), use_linear_projection=True,
                  block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=16,
                  down_block_types=('CrossAttnDownBlock2D', ) * 3 + ('DownBlock2D', ),
                  up_block_types=('UpBlock2D', ) + ('CrossAttnUpBlock2D', ) * 3),
        vae=dict(block_out_channels=(32, 32, 64, 64), latent_channels=4, norm_num_groups=16,
                 down_block_types=('DownEncoderBlock2D', ) * 4,
                 up_block_types=('UpDecoderBlock2D', ) * 4, sample_size=64,
                 scaling_factor=0.18215, layers_per_block=1),
        text=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                  num_hidden_layers=2, max_position_embeddings=77, hidden_act='gelu',
                  projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        scheduler=SD_SCHEDULER),
}


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='tiny', choices=MODELS_,
                        help="'tiny' (CPU, default) or 'sd21-base-arch' (SD 2.1-base's "
                        'architecture, random weights; for GPUs)')
    parser.add_argument('--timesteps', type=int, default=10,
                        help="the scorer's num_timesteps (grid range(10, 990, 1000 // N); "
                        'default 10 as DSD on RefCOCOg)')
    parser.add_argument('--questions', type=int, default=3, help='questions of each kind (3)')
    parser.add_argument('--kinds', nargs='+', default=list(KINDS), choices=list(KINDS),
                        help='question kinds: text (1 image, 10 captions), image (2 images, '
                        '1 caption)')
    parser.add_argument('--repeats', type=int, default=3, help='timed passes (median; 3)')
    parser.add_argument('--max-batch', type=int, default=32, help='rows per UNet call of '
                        'ours (32)')
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda[:N]'")
    parser.add_argument('--dtype', default='float32', choices=DTYPES,
                        help='compute dtype of the networks (float32; DSD runs SD 2.1-base in '
                        'float16 on GPUs)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the weights, inputs and '
                        'noise (0)')
    parser.add_argument('--json', metavar='OUT.json', help='also write the results as JSON')
    args = parser.parse_args(argv)
    for name in ('timesteps', 'questions', 'repeats', 'max_batch'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} {getattr(args, name)}: must be at least 1')
    if args.device.split(':')[0] not in ('cpu', 'cuda'):
        parser.error(f"--device {args.device}: use 'cpu' or 'cuda' (optionally 'cuda:N')")
    if args.dtype != 'float32' and args.device == 'cpu':
        parser.error(f'--dtype {args.dtype} on the CPU: half-precision convolutions are slow or '
                     f'missing there; use float32 on the CPU, half precision with --device cuda')
    if args.json is not None and not args.json.endswith('.json'):
        parser.error(f'--json {args.json}: the results are JSON; name the file *.json')
    return args


# ------------------------------------------------------------------------------------ model
def build_scorer(args, workdir):
    """A ``DSDScorer`` on ``args.model``: the tiny pipeline saved to ``workdir`` and loaded from
    there; SD 2.1-base's architecture built in memory (writing 5 GB of random weights would only
    time the disk)."""
    import torch
    from _dift_reference import sd_components

    from image_text_matching.models import DSDScorer
    arch = ARCHS[args.model]
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    parts = sd_components(arch, os.path.join(workdir, 'tokenizer'))
    common = dict(num_timesteps=args.timesteps, noise_seed=args.seed, max_batch=args.max_batch,
                  image_size=arch['image_size'], dtype=dtype)
    if args.model == 'tiny':
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
        folder = os.path.join(workdir, 'pipeline')
        StableDiffusionPipeline(
            vae=parts.vae, unet=parts.unet, text_encoder=parts.text_encoders[0],
            tokenizer=parts.tokenizers[0],
            scheduler=EulerDiscreteScheduler(steps_offset=1, **SD_SCHEDULER),
            safety_checker=None, feature_extractor=None,
            requires_safety_checker=False).save_pretrained(folder)
        scorer = DSDScorer(pretrained=folder, **common)
    else:
        scorer = DSDScorer(components=parts, **common)
    return scorer.to(args.device).eval()


def make_questions(kind, count, image_size, seed):
    """``count`` questions ``(images (I, 3, S, S) in [-1, 1], captions)`` of ``kind``: smooth
    random images (random 8 x 8 colours upsampled) and random captions of 3-6 words."""
    import torch
    import torch.nn.functional as F
    n_images, n_texts = KINDS[kind]
    generator = torch.Generator().manual_seed(seed + (0 if kind == 'text' else 1000))
    questions = []
    for _ in range(count):
        coarse = torch.rand(n_images, 3, 8, 8, generator=generator) * 2 - 1
        images = F.interpolate(coarse, size=(image_size, image_size), mode='bilinear',
                               align_corners=False).clamp(-1, 1)
        captions = []
        for _ in range(n_texts):
            n = int(torch.randint(3, 7, (1, ), generator=generator))
            picks = torch.randint(0, len(WORDS), (n, ), generator=generator).tolist()
            captions.append(' '.join(WORDS[p] for p in picks))
        questions.append((images, captions))
    return questions


# ------------------------------------------------------------------------------------ timing
def timed(fn, questions, repeats, device, desc):
    """``(median seconds of a pass over all questions, the last pass's score dicts)`` after one
    untimed warm-up pass."""
    import statistics
    import time

    import torch

    from _timing import sync
    from common.progress import progress
    times, results = [], None
    with torch.no_grad():
        for i in progress(range(repeats + 1), desc):
            sync(device)
            start = time.perf_counter()
            results = [fn(images.to(device), captions) for images, captions in questions]
            sync(device)
            if i:
                times.append(time.perf_counter() - start)
    return statistics.median(times), [{k: v.float().cpu() for k, v in r.items()}
                                      for r in results]


def run_kind(scorer, kind, args):
    import math

    import torch
    questions = make_questions(kind, args.questions, ARCHS[args.model]['image_size'], args.seed)
    t_ours, ours = timed(scorer.score, questions, args.repeats, args.device, f'{kind}: ours')
    t_ref, ref = timed(scorer.reference_score, questions, args.repeats, args.device,
                       f'{kind}: reference')
    tolerance = TOLERANCE[args.dtype]
    gaps, equal, same_best = [], True, 0
    for a, b in zip(ours, ref):
        for key in ('dsd', 'attention', 'itm'):
            gaps.append(float((a[key] - b[key]).abs().max()))
            equal &= torch.allclose(a[key], b[key], **tolerance)
        same_best += int(a['dsd'].flatten().argmax() == b['dsd'].flatten().argmax())
    n_images, n_texts = KINDS[kind]
    n_t = len(scorer.timesteps)
    rows = n_images * n_texts * n_t + n_images * n_t  # ours: cond rows + one uncond per image
    n = len(questions)
    return dict(kind=kind, images=n_images, captions=n_texts, candidates=max(n_images, n_texts),
                questions=n, timesteps=n_t, repeats=args.repeats, max_batch=args.max_batch,
                ours_s=t_ours, reference_s=t_ref, ours_questions_per_s=n / t_ours,
                reference_questions_per_s=n / t_ref, speedup=t_ref / t_ours,
                ours_unet_calls=math.ceil(rows / args.max_batch),
                reference_unet_calls=n_images * n_texts * n_t, max_abs_gap=max(gaps),
                scores_equal=bool(equal), same_best=same_best, tolerance=tolerance)


def print_table(rows, args, header):
    print(f'\n{header}')
    head = ('kind', 'candidates', 'ours q/s', 'reference q/s', 'speed-up', 'UNet calls/q ours',
            'UNet calls/q ref', 'max |ours-ref|', 'equal', 'same best')
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for r in rows:
        what = (f"{r['captions']} captions" if r['kind'] == 'text' else f"{r['images']} images")
        cells = (r['kind'], what, f"{r['ours_questions_per_s']:.2f}",
                 f"{r['reference_questions_per_s']:.2f}", f"{r['speedup']:.2f}x",
                 str(r['ours_unet_calls']), str(r['reference_unet_calls']),
                 f"{r['max_abs_gap']:.1e}", str(r['scores_equal']),
                 f"{r['same_best']}/{r['questions']}")
        print('| ' + ' | '.join(cells) + ' |')
    for r in rows:
        print(f"speed-up {r['kind']} retrieval: {r['speedup']:.2f}x (ours {r['ours_s']:.3f} s vs "
              f"reference {r['reference_s']:.3f} s for {r['questions']} questions, "
              f"{r['timesteps']} timesteps, median of {r['repeats']})")


def main(argv=None):
    args = parse_args(argv)
    import json
    import tempfile
    import time

    import torch

    from _timing import device_name
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        sys.exit(f'{PROG}: error: --device {args.device} but torch sees no CUDA device; run on a '
                 f'machine with a GPU or use --device cpu (the tiny model)')
    started = time.time()
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    with tempfile.TemporaryDirectory() as workdir:
        scorer = build_scorer(args, workdir)
        rows = [run_kind(scorer, kind, args) for kind in args.kinds]
    header = (f'model {args.model} ({ARCHS[args.model]["image_size"]} px, {args.dtype}), '
              f'{len(scorer.layers)} DSD layers, timesteps {scorer.timesteps[:3]}... '
              f'({len(scorer.timesteps)}); device: {device_name(args.device)}'
              + (f'; load average {load[0]:.1f}' if load else ''))
    print_table(rows, args, header)
    print(f'total {time.time() - started:.1f} s')
    if args.json:
        from common.io.atomic import atomic_path
        with atomic_path(args.json) as tmp:
            with open(tmp, 'w') as f:
                json.dump(dict(model=args.model, device=device_name(args.device),
                               dtype=args.dtype, seed=args.seed, load_average=load, rows=rows),
                          f, indent=2)
        print(f'results written to {args.json}')
    unequal = [r['kind'] for r in rows if not r['scores_equal']]
    if unequal:
        sys.exit(f'{PROG}: error: ours and the reference disagree on the {", ".join(unequal)} '
                 f'questions (max |gap| above {TOLERANCE[args.dtype]}); the speed-up does not '
                 f'count')
    return rows


if __name__ == '__main__':
    main()
