#!/usr/bin/env python3
"""Writes the seed corpus of the decode_request fuzz target into fuzz/seeds/.

Requests signed with the fuzz secret (radius-server/src/radius/packet/roundtrip.rs), so that
libFuzzer starts from packets that pass Message-Authenticator and password decryption.
"""
import hashlib, hmac, os, struct

SECRET = b"fuzz-secret"
AUTH = bytes(range(16))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def attr(t, v):
    return bytes([t, len(v) + 2]) + v


def password(pw, auth=AUTH):
    pw = pw + b"\0" * (-len(pw) % 16 or (16 if not pw else 0))
    out, prev = b"", auth
    for i in range(0, len(pw), 16):
        pad = hashlib.md5(SECRET + prev).digest()
        block = bytes(a ^ b for a, b in zip(pw[i:i + 16], pad))
        out += block
        prev = block
    return out


def packet(code, attrs, ma=True, ident=7):
    body = (attr(80, b"\0" * 16) if ma else b"") + b"".join(attrs)
    p = bytearray(struct.pack("!BBH", code, ident, 20 + len(body)) + AUTH + body)
    if ma:
        p[22:38] = hmac.new(SECRET, bytes(p), hashlib.md5).digest()
    return bytes(p)


seeds = {
    "access_request": packet(1, [attr(1, b"alice"), attr(2, password(b"hunter2"))]),
    "with_state": packet(1, [attr(1, b"alice"), attr(2, password(b"123456")), attr(24, b"0123456789abcdef.0")]),
    "proxy_states": packet(1, [attr(1, b"bob"), attr(2, password(b"pw" * 20)), attr(33, b"one"), attr(33, b"two")]),
    "nas_attrs": packet(1, [attr(1, b"carol"), attr(2, password(b"x")), attr(4, bytes([127, 0, 0, 1])),
                            attr(32, b"nas-1"), attr(31, b"198.51.100.7"), attr(95, bytes(16))]),
    "status_server": packet(12, []),
    "no_ma": packet(1, [attr(1, b"dave"), attr(2, password(b"pw,123456"))], ma=False),
    "no_ma_proxy_state": packet(1, [attr(1, b"erin"), attr(2, password(b"pw")), attr(33, b"ps")], ma=False),
    "eap": packet(1, [attr(1, b"frank"), attr(79, b"\x02\x00\x00\x05\x01")]),
    "vsa": packet(1, [attr(1, b"gina"), attr(2, password(b"pw")), attr(26, struct.pack("!IBB", 9, 1, 7) + b"a=b\0\0")]),
}
os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
