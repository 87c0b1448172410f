"""bf16 autocast on a CPU without bf16 units is flagged before training (it is emulated there)."""

import torch

from kangaroo.train.metrics import bf16_warning, cpu_bf16_units


def _cpuinfo(tmp_path, flags):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    return str(p)


def test_cpu_bf16_units_read_from_the_flags(tmp_path):
    assert cpu_bf16_units(_cpuinfo(tmp_path, "fpu sse2 avx2 fma")) is False
    assert cpu_bf16_units(_cpuinfo(tmp_path, "fpu avx2 avx512f avx512_bf16")) is True
    assert cpu_bf16_units(_cpuinfo(tmp_path, "fpu avx2 amx_tile amx_bf16")) is True
    assert cpu_bf16_units(str(tmp_path / "missing")) is None


def test_warning_only_for_bf16_on_a_cpu_without_units(tmp_path):
    avx2, bf16 = _cpuinfo(tmp_path, "avx2 fma"), None
    cpu = torch.device("cpu")
    w = bf16_warning(cpu, True, avx2)
    assert w and "bf16=false" in w
    assert bf16_warning(cpu, False, avx2) is None
    (tmp_path / "b").mkdir()
    bf16 = _cpuinfo(tmp_path / "b", "avx2 avx512_bf16")
    assert bf16_warning(cpu, True, bf16) is None
    assert bf16_warning(torch.device("cuda"), True, avx2) is None
    assert bf16_warning(cpu, True, str(tmp_path / "missing")) is None
