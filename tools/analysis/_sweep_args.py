"""The arguments the correspondence sweeps share (which pairs, which protocol and metric, batch
size, device), added to a tool's parser and checked after parsing. Standard library only: the
tools parse their arguments before importing torch."""


def add_sweep_arguments(parser, drawn, default_batch='the config\'s test_dataloader'):
    """``--num-pairs``, ``--preset``, ``--metric`` (the one ``drawn`` in the figure),
    ``--batch-size`` and ``--device``."""
    parser.add_argument('--num-pairs', type=int, metavar='N',
                        help='evaluate N pairs spread evenly over the test split (default all)')
    parser.add_argument('--preset', nargs='+', metavar='P',
                        help='PCK protocols to report instead of the config\'s (e.g. dift)')
    parser.add_argument('--metric', metavar='KEY',
                        help=f'the metric drawn in the {drawn} (default: the first reported, '
                        'e.g. dift/pck@0.1/per_image)')
    parser.add_argument('--batch-size', type=int, metavar='B',
                        help=f'pairs per batch (default: {default_batch})')
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available)')


def check_sweep_arguments(parser, args):
    """Exit with a usage error for a non-positive ``--num-pairs`` or ``--batch-size``."""
    for name in ('num_pairs', 'batch_size'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, got {value}')
