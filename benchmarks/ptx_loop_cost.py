import re, sys, collections
sys.path.insert(0, "/work/main")
from tests.kernels.test_triton_offline_compile import INTS, FORMS
from kernels import triton_gemv
from kernels.triton_gemv import LAYOUTS
from kernels.formats import GGMLType
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
def loop_body(ptx):
    lines = [l.strip() for l in ptx.splitlines()]
    labels = {re.match(r"^(\$L__\w+):", l).group(1): i for i, l in enumerate(lines) if re.match(r"^\$L__\w+:", l)}
    best = None
    for i, l in enumerate(lines):
        m = re.search(r"bra(?:\.uni)?\s+(\$L__\w+);", l)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            body = lines[labels[m.group(1)]:i+1]
            if best is None or len(body) > len(best): best = body
    instr = [l for l in (best or []) if l and not l.startswith(("//", ".", "{", "}")) and not l.endswith(":")]
    return instr
for fmt_name in sys.argv[1:]:
    split = fmt_name.endswith("+cts"); fmt_name = fmt_name.replace("+cts", "")
    q = GGMLType[fmt_name.upper()]
    lay = triton_gemv.CODES_THEN_SCALES_LAYOUT if split else LAYOUTS[q]
    for form in ("plain",):
        sig = {"w_ptr": "*u8", "x_ptr": "*fp32", "y_ptr": "*fp32", "bias_ptr": "*fp32", "ids_ptr": "*i64", "o_ptr": "*fp16", **dict.fromkeys(INTS, "i32")}
        ub = 1 if lay.unit == 256 else (32 if fmt_name == "mxfp4" else 8)
        bn = 8 if fmt_name == "mxfp4" else 16
        c = dict(FMT=lay.fmt, WORD=lay.word, BLOCK_N=bn, UB=ub, STAGES=1, **FORMS[form])
        c.update(part_ptr=None, count_ptr=None)
        sig2 = {**sig, **dict.fromkeys(c, "constexpr")}
        names = list(triton_gemv._qgemv_kernel.arg_names)
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ("w_ptr", "x_ptr", "y_ptr", "o_ptr")}
        k = triton.compile(ASTSource(fn=triton_gemv._qgemv_kernel, signature=sig2, constexprs=c, attrs=attrs), target=GPUTarget("cuda", 90, 32))
        body = loop_body(k.asm["ptx"])
        ops = collections.Counter(l.split()[0].split(".")[0].lstrip("@%p0123456789 ") or l.split()[1].split(".")[0] for l in body)
        n_fma = ops.get("fma", 0)
        print(f"{fmt_name} {form} BLOCK_N={bn} UB={ub}: loop body {len(body)} PTX instr, fma {n_fma} -> {len(body)/max(n_fma,1):.1f} per weight;", dict(ops.most_common(10)))
        sh = [l for l in body if "shared" in l or "bar" in l]
        print("   shared/bar lines:", len(sh), sh[:6])
