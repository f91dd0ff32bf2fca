"""`benchmarks.ncu_where`: the source page parsed, each instruction's region, the table (no GPU needed)."""

from __future__ import annotations

from benchmarks.ncu_where import markdown, ncu_commands, parse_source_csv, region_of_each, where_of

PAGE = """==PROF== Connected to process 1
"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)"
"0x00","LDG.E.64 R4, desc[UR4][R2.64]","10","8"
"0x10","BAR.SYNC.DEFER_BLOCKING 0x0","5","5"
"0x20","STS [R9], R4","3","1"
"0x30","BAR.SYNC.DEFER_BLOCKING 0x0","20","20"
"0x40","LOP3.LUT R6, R4, 0xf0f0f0f, RZ, 0xc0, !PT","40","38"
"0x50","IMMA.16832.S8.S8 R8, R6, R10, RZ","6","2"
"0x60","@P0 HMMA.16816.F32 R8, R6, R10, R8","4","1"
"0x70","RED.E.ADD.STRONG.GPU [R2.64], R0","12","12"
"""


def test_the_source_page_gives_each_instruction_its_samples() -> None:
    instructions = parse_source_csv(PAGE)
    assert [i.address for i in instructions] == [f"0x{n}0" for n in range(8)]
    assert instructions[4].sass.startswith("LOP3") and instructions[4].samples == 40.0
    assert instructions[4].not_issued == 38.0
    assert parse_source_csv("==PROF== no kernel was profiled\n") == []


def test_regions_end_at_the_last_barrier_before_the_first_mma_and_at_the_last_mma() -> None:
    """The first unit's words are waited for at their first use, after the prologue's last barrier: the
    walk's; a predicated mma counts as an mma."""
    regions = region_of_each(parse_source_csv(PAGE))
    assert regions == ["prologue"] * 4 + ["walk"] * 3 + ["epilogue"]
    assert (
        region_of_each(parse_source_csv(PAGE.replace("IMMA", "IADD").replace("HMMA", "IADD")))
        == ["prologue"] * 8
    )


def test_the_row_gives_each_region_s_share_and_the_top_instructions() -> None:
    where = where_of("qkv", parse_source_csv(PAGE), top=2)
    assert where.samples == 100.0
    assert where.share == {"prologue": 38.0, "walk": 50.0, "epilogue": 12.0}
    assert where.stalled["epilogue"] == 100.0
    assert where.top[0].startswith("walk: LOP3") and where.top[0].endswith("(40.0 %)")
    table = [line for line in markdown([where], "# t").splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1


def test_the_commands_profile_one_launch_with_source_counters_and_print_its_sass() -> None:
    profile, source = ncu_commands("ncu", "phi-3-mini attn_qkv", __import__("pathlib").Path("/tmp/r"))
    assert profile[profile.index("--launch-skip") + 1] == "1" and "SourceCounters" in profile
    assert profile[profile.index("--only") + 1] == "phi-3-mini attn_qkv"
    assert source[source.index("--import") + 1] == "/tmp/r.ncu-rep" and "sass" in source
