"""`kernels.triton_offline.round_trips_of_listing` on hand-written `nvdisasm -c -hex` listings: the
scheduling control bits decoded from each instruction's high word, and the round trips one warp makes
to memory in issue order (no Triton needed; the real kernels' counts are `benchmarks.ptx_cost`'s)."""

from __future__ import annotations

from kernels.triton_offline import NO_SCOREBOARD, RoundTrips, round_trips_of_listing, sass_instructions


def _line(address: int, text: str, sets: int = NO_SCOREBOARD, waits: int = 0) -> str:
    """An instruction as nvdisasm prints it: its low word on the first line, the high word (control
    bits: stall 41-44, yield 45, write scoreboard 46-48, read scoreboard 49-51, wait mask 52-57) below."""
    high = (waits << 52) | (7 << 49) | (sets << 46) | (1 << 41)
    return f"        /*{address:04x}*/                   {text} ;    /* 0x0000000000000000 */\n" + (
        f"                                                      /* 0x{high:016x} */\n"
    )


def _listing(*body: tuple) -> str:
    lines, address = [], 0
    for item in body:
        if isinstance(item, str):  # a label
            lines.append(f"{item}:\n")
            continue
        lines.append(_line(address, *item))
        address += 16
    return "".join(lines)


def test_the_control_bits_are_read_from_the_high_word():
    listing = _listing(
        ("@!P0 LDG.E.U16 R1, desc[UR4][R2.64]", 3), ("FADD R4, R1, R1", NO_SCOREBOARD, 0b001000)
    )
    (load, add), labels = sass_instructions(listing)
    assert (load.opcode, load.sets, load.waits) == ("LDG", 3, 0)
    assert (add.opcode, add.sets, add.waits) == ("FADD", NO_SCOREBOARD, 0b001000)
    assert labels == {}


def test_loads_issued_together_are_one_trip_and_a_load_after_a_wait_is_another():
    together = _listing(
        ("LDG.E R1, desc[UR4][R2.64]", 0),
        ("LDG.E R5, desc[UR4][R6.64]", 1),
        ("FADD R4, R1, R5", NO_SCOREBOARD, 0b11),
        ("STG.E desc[UR4][R8.64], R4",),
    )
    assert round_trips_of_listing(together) == RoundTrips(1, 0, 0)
    chained = _listing(
        ("LDG.E R1, desc[UR4][R2.64]", 0),
        ("FADD R4, R1, R1", NO_SCOREBOARD, 0b1),
        ("LDG.E R5, desc[UR4][R6.64]", 0),
        ("ATOMG.E.ADD.STRONG.GPU PT, R7, desc[UR4][R8.64], R4", 1),
        ("FADD R4, R5, R7", NO_SCOREBOARD, 0b11),
    )
    assert round_trips_of_listing(chained) == RoundTrips(2, 0, 0)


def test_short_scoreboarded_instructions_add_no_trip():
    listing = _listing(
        ("S2R R0, SR_TID.X", 0),
        ("LDS R1, [R0]", 1),
        ("SHFL.BFLY PT, R2, R1, 0x1, 0x1f", 2, 0b11),
        ("FADD R3, R2, R1", NO_SCOREBOARD, 0b100),
    )
    assert round_trips_of_listing(listing) == RoundTrips(0, 0, 0)


def test_depbar_waits_for_the_oldest_entries_of_its_scoreboard():
    listing = _listing(
        ("LDG.E R1, desc[UR4][R2.64]", 0),
        ("FADD R9, R9, R9", NO_SCOREBOARD),
        ("LDG.E R5, desc[UR4][R6.64]", 0),
        ("DEPBAR.LE SB0, 0x1",),
        ("LDG.E R7, desc[UR4][R1.64]", 1),
        ("FADD R4, R7, R5", NO_SCOREBOARD, 0b11),
    )
    assert round_trips_of_listing(listing) == RoundTrips(2, 0, 0)


def test_the_largest_loop_is_counted_per_iteration_with_what_comes_before_and_after():
    listing = _listing(
        ("LDG.E R1, desc[UR4][R2.64]", 0),  # prologue: one trip
        ("FADD R4, R1, R1", NO_SCOREBOARD, 0b1),
        ".L_x_0",
        ("LDG.E R5, desc[UR4][R6.64]", 1),  # the walk: weights, then the activations after them
        ("IMAD R8, R5, 0x4, RZ", NO_SCOREBOARD, 0b10),
        ("LDG.E R7, desc[UR4][R8.64]", 2),
        ("FFMA R4, R7, R5, R4", NO_SCOREBOARD, 0b100),
        ("@!P0 BRA `(.L_x_0)",),
        ("ATOMG.E.ADD.STRONG.GPU PT, R9, desc[UR4][R2.64], R4", 3),  # the reduction: three trips
        ("LDG.E.STRONG.GPU R10, desc[UR4][R2.64]", 4, 0b1000),
        ("FADD R11, R10, R4", NO_SCOREBOARD, 0b10000),
        ("LDG.E R12, desc[UR4][R11.64]", 0),
        ("STG.E desc[UR4][R2.64], R12", NO_SCOREBOARD, 0b1),
        ("EXIT",),
    )
    assert round_trips_of_listing(listing) == RoundTrips(prologue=1, per_step=2, epilogue=3)
    assert RoundTrips(1, 2, 3).total(steps=4) == 12


def test_a_load_awaited_in_the_next_iteration_overlaps_the_step():
    listing = _listing(
        ("LDG.E R1, desc[UR4][R2.64]", 0),
        ".L_x_0",
        ("FFMA R4, R1, R1, R4", NO_SCOREBOARD, 0b1),  # this step's words, loaded one step earlier
        ("LDG.E R1, desc[UR4][R2.64+0x40]", 0),  # the next step's
        ("@!P0 BRA `(.L_x_0)",),
    )
    assert round_trips_of_listing(listing) == RoundTrips(prologue=0, per_step=1, epilogue=0)
