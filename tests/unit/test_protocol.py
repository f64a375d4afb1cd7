"""speechstream.net.protocol: parsing and validation of control messages and binary frames (no network)."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest

from speechstream.net.protocol import (
    EndOfAudio,
    Limits,
    ProtocolError,
    SetSpeakers,
    StartConfig,
    TokenBucket,
    bucket_debit,
    bucket_take,
    check_token,
    decode_audio,
    encode_audio,
    origin_allowed,
    parse_control,
    ready_message,
    token_from_request,
    valid_stream_id,
)

# --------------------------------------------------------------------------- control


def test_start_minimal_defaults():
    cfg = parse_control('{"type": "start", "sample_rate_hz": 48000}')
    assert cfg == StartConfig(sample_rate_hz=48000, sample_format="s16")
    assert cfg.bytes_per_sample == 2


def test_start_full():
    cfg = parse_control(
        json.dumps(
            {
                "type": "start",
                "sample_rate_hz": 16000.0,
                "format": "float32",
                "stream_id": "room-1.a",
                "num_speakers": 3,
                "partials": False,
                "names": ["Ann", "Bob"],
            }
        )
    )
    assert cfg == StartConfig(16000, "f32", "room-1.a", 3, False, names=("Ann", "Bob"))
    assert cfg.bytes_per_sample == 4


@pytest.mark.parametrize(
    "msg, code",
    [
        ('{"type": "start"}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 100}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000.5}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": true}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": "16000"}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "format": "u8"}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "format": 3}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "channels": 2}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "stream_id": "../etc"}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "stream_id": "a/b"}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "num_speakers": 0}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "partials": "yes"}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "names": "Ann"}', "bad_control"),
        ('{"type": "start", "sample_rate_hz": 16000, "names": [""]}', "bad_control"),
        ('{"type": "set_speakers"}', "bad_control"),
        ('{"type": "set_speakers", "names": [1, 2]}', "bad_control"),
        ('{"type": "dance"}', "bad_control"),
        ("[1, 2, 3]", "bad_control"),
        ('"start"', "bad_control"),
        ("{not json", "bad_json"),
        ("", "bad_json"),
        (b"\xff\xfe\x00", "bad_json"),
        ("[" * 100_000 + "]" * 100_000, "oversize"),
    ],
)
def test_bad_control(msg, code):
    with pytest.raises(ProtocolError) as err:
        parse_control(msg)
    assert err.value.code == code
    assert err.value.message


def test_deep_nesting_within_size_limit_is_bad_json_not_a_crash():
    limits = Limits(max_control_bytes=10**7)
    with pytest.raises(ProtocolError) as err:
        parse_control("[" * 1_000_000 + "]" * 1_000_000, limits)
    assert err.value.code == "bad_json"


def test_end_and_set_speakers():
    assert parse_control('{"type": "end"}') == EndOfAudio()
    assert parse_control('{"type": "set_speakers", "num_speakers": 2}') == SetSpeakers(2, ())
    assert parse_control('{"type": "set_speakers", "names": ["Ann", "Bob"]}') == SetSpeakers(None, ("Ann", "Bob"))


@pytest.mark.parametrize(
    "sid, ok",
    [
        ("a", True),
        ("mic-1_x.y", True),
        ("-a", False),
        ("", False),
        ("a" * 65, False),
        ("a+b", False),
        ("a#", False),
        ("é", False),
    ],
)
def test_stream_id_alphabet(sid, ok):
    assert valid_stream_id(sid) is ok


# --------------------------------------------------------------------------- audio


def test_s16_roundtrip_and_scale():
    x = np.array([0.0, 0.5, -0.5, -1.0, 0.999], dtype=np.float32)
    y = decode_audio(encode_audio(x, "s16"), "s16")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1 / 32768)
    assert decode_audio(struct.pack("<h", -32768), "s16")[0] == -1.0
    assert y.flags.writeable  # a fresh array, not a view on the network buffer


def test_f32_roundtrip_exact():
    x = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    np.testing.assert_array_equal(decode_audio(encode_audio(x, "f32"), "f32"), x)


def test_empty_frame_is_empty_audio():
    assert decode_audio(b"", "s16").shape == (0,)
    assert decode_audio(b"", "f32").shape == (0,)


@pytest.mark.parametrize(
    "data, fmt, code",
    [
        (b"\x00\x01\x02", "s16", "bad_frame"),  # odd byte count
        (b"\x00" * 6, "f32", "bad_frame"),  # not a multiple of 4
        (struct.pack("<3f", 0.0, float("nan"), 0.1), "f32", "bad_frame"),
        (struct.pack("<2f", float("inf"), 0.1), "f32", "bad_frame"),
        (struct.pack("<2f", 1e30, 0.1), "f32", "bad_frame"),  # int bytes declared as float32
        (b"\x00" * (256 * 1024 + 2), "s16", "oversize"),
    ],
)
def test_bad_frames(data, fmt, code):
    with pytest.raises(ProtocolError) as err:
        decode_audio(data, fmt)
    assert err.value.code == code


def test_int16_bytes_declared_float32_mostly_rejected():
    # Real int16 speech read as float32 gives huge or denormal values; huge ones are caught.
    pcm = (np.sin(np.arange(1600) * 0.05) * 20000).astype("<i2").tobytes()
    with pytest.raises(ProtocolError):
        decode_audio(pcm, "f32")


def test_fuzz_random_frames_never_raise_anything_but_protocol_error():
    rng = random.Random(1234)
    limits = Limits(max_frame_bytes=4096, max_control_bytes=512)
    accepted = rejected = 0
    for _ in range(3000):
        n = rng.choice([0, 1, 2, 3, 4, 5, 7, 8, 64, 513, 1000, 4096, 4097, 5000])
        data = rng.randbytes(n)
        fmt = rng.choice(["s16", "f32"])
        try:
            x = decode_audio(data, fmt, limits)
            assert x.dtype == np.float32 and np.isfinite(x).all()
            accepted += 1
        except ProtocolError as exc:
            assert exc.code in {"bad_frame", "oversize"}
            rejected += 1
        try:
            parse_control(data, limits)
        except ProtocolError as exc:
            assert exc.code in {"bad_json", "bad_control", "oversize"}
    assert accepted and rejected


def test_fuzz_json_shapes():
    rng = random.Random(7)
    values = [None, True, 0, -1, 1.5, 1e308, "", "x" * 70, [], {}, [1], {"a": 1}, 16000, "s16", "f32"]
    keys = ["type", "sample_rate_hz", "format", "stream_id", "num_speakers", "names", "partials", "channels"]
    types_ = ["start", "end", "set_speakers", "bogus", None, 3]
    for _ in range(2000):
        d = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, len(keys)))}
        d["type"] = rng.choice(types_)
        try:
            msg = parse_control(json.dumps(d))
        except ProtocolError as exc:
            assert exc.code in {"bad_control", "bad_json"}
        else:
            assert isinstance(msg, (StartConfig, EndOfAudio, SetSpeakers))


# --------------------------------------------------------------------------- rate limit, auth, ready


def test_bucket_debit_waits_instead_of_refusing():
    b = TokenBucket.full(capacity=2.0, rate=4.0, now=0.0)
    wait, b = bucket_debit(b, 1.5, 0.0)
    assert wait == 0.0 and b.tokens == pytest.approx(0.5)
    wait, b = bucket_debit(b, 1.5, 0.0)  # one token short: wait until it has refilled
    assert wait == pytest.approx(0.25) and b.tokens == pytest.approx(-1.0)
    wait, b = bucket_debit(b, 3.0, 0.25)  # more than the capacity still passes, after a longer wait
    assert wait == pytest.approx(0.75)
    wait, b = bucket_debit(b, 0.5, 100.0)  # refilled, capped at capacity
    assert wait == 0.0 and b.tokens == pytest.approx(1.5)
    # The long-run rate is the bucket's: 100 takes of 1 token at t=0 wait up to (100 - 2) / 4 s.
    b, waits = TokenBucket.full(2.0, 4.0, 0.0), []
    for _ in range(100):
        w, b = bucket_debit(b, 1.0, 0.0)
        waits.append(w)
    assert waits[:2] == [0.0, 0.0] and waits[-1] == pytest.approx(98 / 4)


@pytest.mark.parametrize(
    "origin, host, allowed, loopback, ok",
    [
        (None, "127.0.0.1:8765", (), True, True),  # not a browser
        ("http://127.0.0.1:8765", "127.0.0.1:8765", (), True, True),  # the page itself
        ("http://LOCALHOST:8765/", "localhost:8765", (), True, True),
        ("http://[::1]:8765", "[::1]:8765", (), True, True),
        ("http://127.0.0.1:9999", "127.0.0.1:8765", (), True, False),  # another local port is another origin
        ("http://evil.example", "127.0.0.1:8765", (), True, False),
        ("http://evil.example:8765", "evil.example:8765", (), True, False),  # DNS rebinding
        ("http://box.lan:8765", "box.lan:8765", (), False, True),  # --host 0.0.0.0: the LAN name is the page's
        ("null", "127.0.0.1:8765", (), True, False),
        ("https://app.example", "127.0.0.1:8765", ("https://app.example",), True, True),
        ("https://app.example", "127.0.0.1:8765", ("https://other.example",), True, False),
        ("https://anything.example", "127.0.0.1:8765", ("*",), True, True),
        ("http://127.0.0.1:8765", None, (), True, False),
    ],
)
def test_origin_allowed(origin, host, allowed, loopback, ok):
    assert origin_allowed(origin, host, allowed, loopback_only=loopback) is ok


def test_token_bucket_refills_and_refusal_costs_nothing():
    b = TokenBucket.full(capacity=2.0, rate=1.0, now=0.0)
    ok, b = bucket_take(b, 1.5, 0.0)
    assert ok and b.tokens == pytest.approx(0.5)
    ok, b = bucket_take(b, 1.0, 0.0)
    assert not ok and b.tokens == pytest.approx(0.5)
    ok, b = bucket_take(b, 1.0, 0.5)  # refilled by 0.5
    assert ok and b.tokens == pytest.approx(0.0)
    ok, b = bucket_take(b, 0.1, 100.0)  # capped at capacity
    assert ok and b.tokens == pytest.approx(1.9)


def test_token_from_request_and_check():
    assert token_from_request("/ws?token=abc&x=1", {}) == "abc"
    assert token_from_request("/ws", {"Authorization": "Bearer s3cret"}) == "s3cret"
    assert token_from_request("/ws", {}) is None
    assert check_token(None, None)
    assert check_token("abc", "abc")
    assert not check_token("abc", None)
    assert not check_token("abc", "abd")


def test_ready_message_is_json():
    msg = ready_message("s1", StartConfig(48000, "f32"), Limits())
    assert json.loads(json.dumps(msg))["type"] == "ready"
    assert msg["stream_id"] == "s1" and msg["format"] == "f32" and msg["output_sample_rate_hz"] == 16000


# --------------------------------------------------------------------------- offset header (at-least-once transports)


def test_offset_header_roundtrip_and_short_frame():
    from speechstream.net.protocol import split_offset_header, with_offset_header

    assert split_offset_header(with_offset_header(123456789, b"\x01\x02")) == (123456789, b"\x01\x02")
    with pytest.raises(ProtocolError) as err:
        split_offset_header(b"\x00" * 7)
    assert err.value.code == "bad_frame"
    assert parse_control('{"type":"start","sample_rate_hz":16000,"offset_header":true}').offset_header
    with pytest.raises(ProtocolError):
        parse_control('{"type":"start","sample_rate_hz":16000,"offset_header":1}')


def test_align_to_offset_drops_repeats_and_fills_gaps():
    from speechstream.net.protocol import align_to_offset

    x = np.arange(1, 5, dtype=np.float32)  # 4 samples
    y, exp, gap = align_to_offset(x, 0, 0, 100)
    assert y.tolist() == [1, 2, 3, 4] and exp == 4 and gap == 0
    y, exp, gap = align_to_offset(x, 0, 4, 100)  # the same frame again: dropped
    assert y.size == 0 and exp == 4
    y, exp, gap = align_to_offset(x, 2, 4, 100)  # overlaps by 2: the head is dropped
    assert y.tolist() == [3, 4] and exp == 6
    y, exp, gap = align_to_offset(x, 9, 6, 100)  # 3 samples lost: silence keeps time exact
    assert y.tolist() == [0, 0, 0, 1, 2, 3, 4] and exp == 13 and gap == 3
    with pytest.raises(ProtocolError) as err:
        align_to_offset(x, 1000, 13, 100)
    assert err.value.code == "gap" and err.value.fatal
