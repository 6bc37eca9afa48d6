"""Known data for tests/programs/redis.sh (never talks to the network itself).

  redis_data.py gen DIR     writes into DIR:
      mass.resp       RESP commands for `redis-cli --pipe` (SET/APPEND/HSET/RPUSH/ZADD/SADD/INCRBY)
      reads.txt       inline read commands for `redis-cli --raw < reads.txt` (one reply per line)
      expected.txt    the exact --raw output reads.txt must produce
      bin.*.dat       binary values, each stored as key zt:bin:<size> (checked one GET at a time)
      x1m.dat         a 1 MiB value for `redis-cli -x set zt:x1m`
      payload_bytes   total bytes of values written (lower bound for INFO used_memory)
Values: mostly small, many 1-4 KiB, a few hundred above 4 KiB, exact edges (4095/4096/4097...),
strings grown by APPEND across 4 KiB (sds realloc), hashes/lists/zsets/sets in both encodings.
"""
import os
import sys

ALPHA = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def text(seed, n):
    """Deterministic printable bytes without spaces or newlines."""
    out = bytearray(n)
    x = (seed * 2654435761 + 12345) & 0xFFFFFFFF
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = ALPHA[(x >> 16) % len(ALPHA)]
    return bytes(out)


def fast_text(seed, n):
    """Cheaper variant for big values: a seeded 997-byte period (still no spaces/newlines)."""
    base = text(seed, 997)
    return (base * (n // 997 + 1))[:n]


def binary(seed, n):
    out = bytearray(n)
    x = seed | 1
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


def resp(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a).encode()
        elif isinstance(a, str):
            a = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


def gen(d):
    mass, reads, exp = [], [], []
    payload = 0

    def read(cmd, lines):
        reads.append(cmd)
        exp.extend(lines)

    # plain strings
    for i in range(20000):
        if i % 100 == 0:
            n = 4097 + (i * 37) % 12000          # > 4 KiB
        elif i % 7 == 0:
            n = 1000 + (i * 13) % 3200           # 1 KiB .. 4.1 KiB
        else:
            n = 1 + (i * 13) % 200
        v = fast_text(i, n) if n > 2000 else text(i, n)
        mass.append(resp("SET", f"zt:s:{i}", v))
        payload += n
        read(f"GET zt:s:{i}", [v])
    # exact edges around the 4 KiB limit and some big ones
    for n in (1, 8, 15, 16, 17, 4088, 4095, 4096, 4097, 8191, 8192, 65536, 1 << 20):
        v = fast_text(n, n)
        mass.append(resp("SET", f"zt:edge:{n}", v))
        payload += n
        read(f"GET zt:edge:{n}", [v])
        read(f"STRLEN zt:edge:{n}", [str(n).encode()])
    # strings grown by APPEND across 4 KiB (sds realloc / sdsMakeRoomFor)
    for j in range(200):
        v = text(j, 10)
        mass.append(resp("SET", f"zt:grow:{j}", v))
        for k in range(60):
            piece = text(j * 100 + k, 50 + (j + k) % 100)
            v += piece
            mass.append(resp("APPEND", f"zt:grow:{j}", piece))
        payload += len(v)
        read(f"GET zt:grow:{j}", [v])
    # hashes: small (listpack) and with big fields (hashtable)
    for j in range(500):
        fields = []
        for f in range(20):
            n = 5 + (j * 7 + f) % 60 if j % 10 else 100 + (j * 31 + f * 97) % 6000
            fields.append((f"f{f}", fast_text(j * 1000 + f, n)))
        args = ["HSET", f"zt:h:{j}"]
        for k, v in fields:
            args += [k, v]
            payload += len(v)
        mass.append(resp(*args))
        read(f"HMGET zt:h:{j} " + " ".join(k for k, _ in fields), [v for _, v in fields])
        read(f"HLEN zt:h:{j}", [b"20"])
    # lists
    for j in range(300):
        items = [text(j * 500 + k, 1 + (j + k * 3) % (80 if j % 5 else 3000)) for k in range(50)]
        mass.append(resp("RPUSH", f"zt:l:{j}", *items))
        payload += sum(map(len, items))
        read(f"LRANGE zt:l:{j} 0 -1", items)
    # sorted sets (integer scores so the printed form is exact)
    for j in range(200):
        members = [(k * 37 % 101, b"m%d-" % k + text(j * 77 + k, 5 + k % 40)) for k in range(40)]
        args = ["ZADD", f"zt:z:{j}"]
        for s, m in members:
            args += [s, m]
        mass.append(resp(*args))
        lines = []
        for s, m in sorted(members):
            lines += [m, str(s).encode()]
        read(f"ZRANGE zt:z:{j} 0 -1 WITHSCORES", lines)
    # sets (read back sorted, since set order is not defined)
    for j in range(200):
        members = [text(j * 91 + k, 3 + k % 30) for k in range(30 + j % 200)]
        mass.append(resp("SADD", f"zt:set:{j}", *members))
        read(f"SORT zt:set:{j} ALPHA", sorted(set(members)))
    # counters
    for j in range(100):
        total = 0
        for k in range(20):
            inc = (j * 13 + k * 7) % 1000 - 300
            total += inc
            mass.append(resp("INCRBY", f"zt:cnt:{j}", inc))
        read(f"GET zt:cnt:{j}", [str(total).encode()])
    # binary values, checked one by one
    for n in (100, 4096, 5000, 70000, 300000):
        v = binary(n, n)
        with open(os.path.join(d, f"bin.{n}.dat"), "wb") as fh:
            fh.write(v)
        mass.append(resp("SET", f"zt:bin:{n}", v))
        payload += n
    x1m = fast_text(99, 1 << 20)
    with open(os.path.join(d, "x1m.dat"), "wb") as fh:
        fh.write(x1m)
    payload += len(x1m)
    read("STRLEN zt:x1m", [b"1048576"])
    read("GET zt:x1m", [x1m])

    with open(os.path.join(d, "mass.resp"), "wb") as fh:
        fh.write(b"".join(mass))
    with open(os.path.join(d, "reads.txt"), "w") as fh:
        fh.write("\n".join(reads) + "\n")
    with open(os.path.join(d, "expected.txt"), "wb") as fh:
        fh.write(b"".join(line + b"\n" for line in exp))
    with open(os.path.join(d, "payload_bytes"), "w") as fh:
        fh.write(f"{payload}\n")
    print(f"generated {len(mass)} write commands, {len(reads)} read commands, "
          f"{payload} payload bytes")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "gen":
        sys.exit(__doc__)
    gen(sys.argv[2])
