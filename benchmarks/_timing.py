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


def device_name(device):
    if torch.device(device).type == 'cuda':
        return torch.cuda.get_device_name(0)
    import platform
    return f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
