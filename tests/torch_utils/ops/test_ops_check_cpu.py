"""bench/ops_check.py (the GPU op check run by bench/gpu_check.sh) on the CPU: the script imports, every case's op
has a plugin entry, and its comparison machinery passes where the "cuda" impl falls back to CPU paths."""

import torch

from bench import ops_check

def test_every_case_has_a_plugin_entry():
    cases = [c for f in ops_check.CASE_FACTORIES for c in f()]
    assert {c.op for c in cases} == set(ops_check.PLUGINS)
    assert all(callable(build) for build in ops_check.PLUGINS.values())

def test_smallest_case_of_each_op_passes_on_cpu():
    # The smallest case per op keeps this quick; the layout check concerns the CUDA kernels only.
    size = lambda c: sum(t.numel() for t in c.inputs(torch.device('cpu')).values())
    smallest = {}
    for case in (c for f in ops_check.CASE_FACTORIES for c in f()):
        if case.op not in smallest or size(case) < size(smallest[case.op]):
            smallest[case.op] = case
    for case in smallest.values():
        res = ops_check.run_case(case, torch.device('cpu'), iters=0)
        assert res['compare'] and all(v['ok'] for v in res['compare'].values()), (case.op, case.name, res['compare'])
