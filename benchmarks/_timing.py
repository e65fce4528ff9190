"""Small timing helpers shared by the benchmarks (median of repeats, device sync)."""
import statistics
import time

import torch


def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def median_seconds(fn, repeats=5, warmup=1, device='cpu'):
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_seconds(fns, repeats=5, warmup=1, device='cpu'):
    """Median wall time of each of ``fns`` over ``repeats`` rounds, the calls alternating
    (``a, b, a, b, ...``) so that a slow spell of the machine (another process, frequency
    scaling) hits every side alike and their ratio stays fair; ``warmup`` untimed rounds first."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            sync(device)
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def device_name(device):
    if torch.device(device).type == 'cuda':
        return torch.cuda.get_device_name(0)
    import platform
    return f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
