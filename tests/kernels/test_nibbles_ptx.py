"""The inline PTX that turns int4 nibbles into 16-bit (q - zero) pairs (streaming_gemm._NIBBLES_PTX)
cannot run in Triton's interpreter; here its text is executed by a small evaluator of the six
instructions it uses, for every byte and zero point, against the unpacked nibbles. (Its compilation
for sm_90 is checked by scripts/inspect_gemv_sass.py, its result on a GPU by
tests/gpu/test_weight_streaming_gpu.py.)"""
import re

import numpy as np
import pytest

from tritium.kernels.streaming_gemm import NIBBLES_BF16_PTX, NIBBLES_F16_PTX

M32 = 0xFFFFFFFF


def _halves_to_float(reg: int, kind: str) -> tuple[float, float]:
    halves = [reg & 0xFFFF, reg >> 16]
    if kind == "f16x2":
        return tuple(float(np.array([h], dtype=np.uint16).view(np.float16)[0]) for h in halves)
    return tuple(float(np.array([h << 16], dtype=np.uint32).view(np.float32)[0]) for h in halves)


def _float_to_half(v: float, kind: str) -> int:
    if kind == "f16x2":
        return int(np.array([v], dtype=np.float16).view(np.uint16)[0])
    bits = int(np.array([v], dtype=np.float32).view(np.uint32)[0])
    return (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even


def run_ptx(text: str, regs: dict[str, int]) -> dict[str, int]:
    """Execute prmt / shr / mov / lop3 / fma.rn.{f16x2,bf16x2} on 32-bit registers."""
    value = lambda tok: int(tok, 16) if tok.startswith("0x") else (int(tok) if tok.isdigit() else regs[tok])  # noqa: E731
    for line in text.splitlines():
        line = line.strip().rstrip(";")
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, args = line.split(None, 1)
        d, *src = [a.strip() for a in args.split(",")]
        s = [value(a) for a in src]
        if op == "prmt.b32":
            pool = s[0] | (s[1] << 32)
            regs[d] = sum(((pool >> (8 * ((s[2] >> (4 * i)) & 7))) & 0xFF) << (8 * i) for i in range(4))
        elif op == "shr.b32":
            regs[d] = s[0] >> s[1]
        elif op == "mov.b32":
            regs[d] = s[0]
        elif op == "lop3.b32":
            a, b, c, lut = s
            out = 0
            for i in range(8):
                if lut >> i & 1:
                    out |= ((a if i & 4 else ~a) & (b if i & 2 else ~b) & (c if i & 1 else ~c)) & M32
            regs[d] = out
        elif op.startswith("fma.rn."):
            kind = op.split(".")[2]
            a, b, c = (_halves_to_float(v, kind) for v in s)
            regs[d] = sum(_float_to_half(a[i] * b[i] + c[i], kind) << (16 * i) for i in range(2))
        else:
            raise AssertionError(f"unexpected instruction {op}")
    return regs


@pytest.mark.parametrize("ptx,kind,magic", [(NIBBLES_F16_PTX, "f16x2", 1024.0), (NIBBLES_BF16_PTX, "bf16x2", 128.0)])
def test_nibble_ptx_gives_each_byte_its_nibbles_less_the_zero(ptx, kind, magic):
    text = re.sub(r"\$(\d)", r"r\1", ptx.value)  # operands $0..$6 as named registers
    rng = np.random.default_rng(0)
    for zero in range(16):
        neg = _float_to_half(-(magic + zero), kind)
        for _ in range(64):
            data = rng.integers(0, 256, 4)
            regs = run_ptx(text, {"r4": int(sum(int(v) << (8 * i) for i, v in enumerate(data))),
                                  "r5": neg | (neg << 16), "r6": neg | (neg << 16)})
            lo = _halves_to_float(regs["r0"], kind) + _halves_to_float(regs["r1"], kind)  # elements 0..3
            hi = _halves_to_float(regs["r2"], kind) + _halves_to_float(regs["r3"], kind)
            assert list(lo) == [float((v & 0xF) - zero) for v in data]
            assert list(hi) == [float((v >> 4) - zero) for v in data]
