"""Print the inner loops of the reduced-precision kernels, as compiled for this CPU.

    FASTLSTM_CACHE=0 python tools/lowp_asm.py

(Numba cannot show the assembly of functions it loaded from its cache, hence
FASTLSTM_CACHE=0.)  For int8 (``kernels.int8.qdot``) the loop of the 1 x 64
tile of a batch-1 step: per group of 4 k, one broadcast of the row's 4 bytes,
then per 8 columns vpmaddubsw (u8 x s8 -> int16 pairs), vpmaddwd by ones
(-> int32) and vpaddd.  For bf16 (``kernels.lowp.bf16_panel_gemm``): one
vpunpcklwd / vpunpckhwd with zeros widens 8 bf16 weights to float32, then one
FMA per row.  Counts of the instructions that matter are printed first.
"""
import os
import re
import sys

os.environ.setdefault("FASTLSTM_CACHE", "0")


def _blocks(asm):
    blocks, cur = [], []
    for line in asm.split("\n"):
        if re.match(r"^\.?L\w+:", line) or re.match(r"^\w+:", line):
            blocks.append(cur)
            cur = [line]
        else:
            cur.append(line)
    blocks.append(cur)
    return blocks


def show(title, asm, key, want):
    print(f"== {title}")
    for name in ("vpmaddubsw", "vpmaddwd", "vpdpbusd", "vpunpcklwd", "vpunpckhwd",
                 "vfmadd231ps", "vdpbf16ps"):
        print(f"  {name}: {asm.count(name)}")
    for b in _blocks(asm):
        if sum(key in line for line in b) >= want:
            print("\n".join(b))
            return
    print("  (loop not found)")


def main():
    from fastlstm.kernels import int8, lowp
    if os.environ.get("FASTLSTM_CACHE") != "0":
        sys.exit("run with FASTLSTM_CACHE=0")
    show("int8: kernels.int8.qdot, the 1 x 64 tile (8 x 8 columns per 4 k)",
         int8.qdot.inspect_asm(int8.qdot.signatures[0]), "vpmaddubsw", 8)
    basm = lowp.bf16_panel_gemm.inspect_asm(lowp.bf16_panel_gemm.signatures[0])
    show("bf16: kernels.lowp.bf16_panel_gemm, the 2-row loop (8 FMAs)", basm,
         "vfmadd231ps", 8)


if __name__ == "__main__":
    main()
