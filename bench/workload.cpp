// ZNS-Slab main workload: a bundled small-object workload shaped like an infrastructure service.
//
//   phase "sessions"  session/token store: std::unordered_map<std::string, Session> with small
//                     strings and vectors in the values (tokens 16..64 B, records 64..512 B,
//                     occasional 1..4 KiB cache entries, occasional >4 KiB blobs); rounds of
//                     inserts, lookups, updates and expiries driven by a timer wheel.
//   phase "requests"  per-request trace headers (build, serialize, parse, compare), metric
//                     counters keyed by label strings with periodic scrapes, and C-style buffers
//                     (malloc/realloc growth and shrink across 4 KiB, calloc, strdup, aligned_alloc,
//                     posix_memalign, over-aligned new).
//   phase "pipeline"  two threads: a producer allocates messages (malloc'd and new'd), a consumer
//                     verifies and frees them; the consumer sends small acks back the other way,
//                     which the producer frees.  Every free here is a cross-thread free.
//   phase "teardown"  the session store (kept alive through the other phases, so they run on a
//                     populated heap) and the metric tables are destroyed.
//
// Deterministic: fixed seeds, no pointer values or allocator-dependent quantities (addresses,
// malloc_usable_size, timing) enter the checksum, and the checksum is folded in a fixed order.
// The line "checksum: <16 hex digits>" is therefore identical under any correct allocator.
// Every object's contents are verified against a fingerprint taken when it was written, so an
// allocator that hands out overlapping blocks or corrupts freed memory is reported as
// "integrity errors" (exit 3) rather than as just a different checksum.
//
// Usage: workload [--scale N] [--help]     (N > 0, may be fractional; multiplies the work)
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// ---- deterministic helpers ---------------------------------------------------------------------
struct Rng {                                   // splitmix64: tiny, fast, identical everywhere
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) { return n ? next() % n : 0; }
    uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }  // inclusive
    bool chance(uint64_t num, uint64_t den) { return below(den) < num; }
};

inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}
inline uint64_t fold(uint64_t acc, uint64_t v) { return mix64(acc ^ (v + 0x9e3779b97f4a7c15ULL + (acc << 6) + (acc >> 2))); }

uint64_t hash_bytes(const void *data, size_t n, uint64_t seed = 0x1234567) {
    const unsigned char *p = static_cast<const unsigned char *>(data);
    uint64_t a = seed ^ (n * 0x9e3779b97f4a7c15ULL), b = ~seed;   // two independent lanes
    while (n >= 16) {
        uint64_t w0, w1;
        std::memcpy(&w0, p, 8);
        std::memcpy(&w1, p + 8, 8);
        a = std::rotl((a ^ w0) * 0x9e3779b97f4a7c15ULL, 29);
        b = std::rotl((b ^ w1) * 0xc2b2ae3d27d4eb4fULL, 31);
        p += 16; n -= 16;
    }
    uint64_t w0 = 0, w1 = 0;
    if (n > 8) { std::memcpy(&w0, p, 8); std::memcpy(&w1, p + 8, n - 8); }
    else std::memcpy(&w0, p, n);
    a = std::rotl((a ^ w0) * 0x9e3779b97f4a7c15ULL, 29);
    b = std::rotl((b ^ w1) * 0xc2b2ae3d27d4eb4fULL, 31);
    return mix64(a ^ mix64(b ^ (n << 56)));
}
inline uint64_t hash_str(std::string_view s, uint64_t seed = 0x1234567) { return hash_bytes(s.data(), s.size(), seed); }

// Deterministic bytes, 8 at a time.
void fill_bytes(char *dst, size_t n, uint64_t seed) {
    Rng r(seed);
    while (n >= 8) { uint64_t w = r.next(); std::memcpy(dst, &w, 8); dst += 8; n -= 8; }
    if (n) { uint64_t w = r.next(); std::memcpy(dst, &w, n); }
}
const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const char kHex[] = "0123456789abcdef";
std::string printable(Rng &r, size_t n) {
    std::string s;
    s.resize(n);
    for (size_t i = 0; i < n; i++) s[i] = kB64[r.next() & 63];
    return s;
}
std::string hex(Rng &r, size_t n) {
    std::string s(n, '0');
    for (size_t i = 0; i < n; i++) s[i] = kHex[r.next() & 15];
    return s;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t g_errors = 0;
void integrity_error(const char *what, uint64_t detail) {
    if (g_errors < 20) std::fprintf(stderr, "workload: INTEGRITY ERROR: %s (%" PRIu64 ")\n", what, detail);
    g_errors++;
}

// ---- phase 1: session / token store ------------------------------------------------------------
struct Session {
    std::string user;                          // 6..40 chars: some inline (SSO), most on the heap
    std::string record;                        // 64..512 B serialized record
    std::vector<std::string> roles;            // 0..8 role names, 8..24 chars
    std::vector<uint32_t> scopes;              // 0..16 scope ids
    std::string cache;                         // usually empty; occasionally a 1..4 KiB cache entry
    std::unique_ptr<char[]> blob;              // rarely a >4 KiB blob
    size_t blob_len = 0;
    uint64_t expires = 0;
    uint32_t version = 0;
    uint32_t hits = 0;
    uint64_t cache_h = 0, blob_h = 0;          // hashes of the large fields
    uint64_t fp = 0;                           // fingerprint of the contents when last written
};

// The small fields are fingerprinted on every access; the large ones (cache entry, blob) carry their
// own hashes, taken when written and checked whenever the session is updated, expired or swept.
uint64_t fingerprint(const Session &s) {
    uint64_t h = hash_str(s.user, 1);
    h = fold(h, hash_str(s.record, 2));
    h = fold(h, s.roles.size());
    for (const auto &r : s.roles) h = fold(h, hash_str(r, 3));
    h = fold(h, hash_bytes(s.scopes.data(), s.scopes.size() * sizeof(uint32_t), 4));
    h = fold(h, s.cache.size());
    h = fold(h, s.cache_h);
    h = fold(h, s.blob_len);
    h = fold(h, s.blob_h);
    return fold(h, s.version);
}
bool large_ok(const Session &s) {
    return hash_str(s.cache, 5) == s.cache_h && (s.blob_len ? hash_bytes(s.blob.get(), s.blob_len, 6) : 0) == s.blob_h;
}

std::string make_record(Rng &r, size_t n) {     // "k=v;" text with a binary tail, n bytes exactly
    std::string rec;
    rec.reserve(16);                           // grows through several reallocations, as real code does
    while (rec.size() + 24 < n) {
        rec += kB64[r.next() & 63];
        rec += kB64[r.next() & 63];
        rec += '=';
        rec += std::to_string(r.below(1000000));
        rec += ';';
    }
    size_t tail = n - rec.size();
    size_t at = rec.size();
    rec.resize(n);
    fill_bytes(&rec[at], tail, r.next());
    return rec;
}

void set_cache(Session &s, Rng &r) {
    s.cache.assign(r.range(1024, 4096), '\0');
    fill_bytes(&s.cache[0], s.cache.size(), r.next());
    s.cache_h = hash_str(s.cache, 5);
}
void clear_cache(Session &s) { s.cache.clear(); s.cache.shrink_to_fit(); s.cache_h = hash_str(s.cache, 5); }
void set_blob(Session &s, Rng &r) {
    s.blob_len = r.range(4097, 49152);
    s.blob.reset(new char[s.blob_len]);
    fill_bytes(s.blob.get(), s.blob_len, r.next());
    s.blob_h = hash_bytes(s.blob.get(), s.blob_len, 6);
}
void clear_blob(Session &s) { s.blob.reset(); s.blob_len = 0; s.blob_h = 0; }

Session make_session(Rng &r, uint64_t now) {
    Session s;
    s.user = printable(r, r.range(6, 40));
    s.record = make_record(r, r.range(64, 512));
    size_t nroles = r.below(5);
    for (size_t i = 0; i < nroles; i++) s.roles.push_back("role:" + printable(r, r.range(3, 19)));
    size_t nscopes = r.below(17);
    for (size_t i = 0; i < nscopes; i++) s.scopes.push_back(uint32_t(r.below(4096)));
    s.cache_h = hash_str(s.cache, 5);
    if (r.chance(3, 100)) set_cache(s, r);
    if (r.chance(3, 1000)) set_blob(s, r);
    s.expires = now + r.range(4, 40);
    s.fp = fingerprint(s);
    return s;
}

using Store = std::unordered_map<std::string, Session>;

struct SessionPhase {
    Store store;
    std::vector<std::vector<std::string>> wheel = std::vector<std::vector<std::string>>(64);
    std::vector<std::string> recent = std::vector<std::string>(8192);   // ring of recently issued tokens
    size_t recent_at = 0;
    uint64_t next_id = 1;
    uint64_t inserts = 0, hits = 0, misses = 0, updates = 0, expired = 0, peak_live = 0;
    uint64_t sum = 0x5e55;

    std::string new_token(Rng &r) {            // unique: id in base64, then random filler to 16..64
        std::string t;
        uint64_t id = next_id++;
        do { t += kB64[id & 63]; id >>= 6; } while (id);
        t += '.';
        size_t want = r.range(16, 64);
        if (t.size() < want) t += printable(r, want - t.size());
        return t;
    }

    void verify(const Session &s, uint64_t where) {
        if (fingerprint(s) != s.fp) integrity_error("session contents changed behind our back", where);
    }
    void verify_full(const Session &s, uint64_t where) {
        verify(s, where);
        if (!large_ok(s)) integrity_error("session cache entry or blob changed behind our back", where);
    }

    void round(Rng &r, uint64_t now) {
        // inserts
        for (int i = 0; i < 2000; i++) {
            std::string tok = new_token(r);
            Session s = make_session(r, now);
            wheel[s.expires % wheel.size()].push_back(tok);
            recent[recent_at++ % recent.size()] = tok;
            auto [it, ok] = store.emplace(std::move(tok), std::move(s));
            if (!ok) integrity_error("duplicate token", now);
            sum = fold(sum, it->second.fp);
            inserts++;
        }
        peak_live = std::max<uint64_t>(peak_live, store.size());
        // lookups: mostly recent tokens (some expired by now), some tokens that never existed
        for (int i = 0; i < 7000; i++) {
            std::string key;
            if (r.chance(85, 100)) key = recent[r.below(recent.size())];
            else key = "zz." + printable(r, r.range(13, 61));
            auto it = store.find(key);
            if (it == store.end()) { misses++; sum = fold(sum, key.size()); continue; }
            verify(it->second, now);
            it->second.hits++;
            hits++;
            sum = fold(sum, it->second.fp ^ it->second.hits);
        }
        // updates
        for (int i = 0; i < 1800; i++) {
            auto it = store.find(recent[r.below(recent.size())]);
            if (it == store.end()) continue;
            Session &s = it->second;
            verify_full(s, now);
            uint64_t what = r.below(1000);
            if (what < 400) s.record = make_record(r, r.range(64, 512));
            else if (what < 600) {
                if (s.roles.size() >= 8) s.roles.erase(s.roles.begin());
                s.roles.push_back("role:" + printable(r, r.range(3, 19)));
            } else if (what < 750) s.user = printable(r, r.range(6, 40));
            else if (what < 850) {
                if (s.cache.empty()) set_cache(s, r);
                else clear_cache(s);
            } else if (what < 900) {
                s.scopes.push_back(uint32_t(r.below(4096)));
                if (s.scopes.size() > 32) s.scopes.erase(s.scopes.begin(), s.scopes.begin() + 16);
            } else if (what < 995) {             // touch: extend the TTL, reschedule in the wheel
                s.expires = now + r.range(4, 40);
                wheel[s.expires % wheel.size()].push_back(it->first);
            } else {
                if (s.blob_len) clear_blob(s);
                else set_blob(s, r);
            }
            s.version++;
            s.fp = fingerprint(s);
            sum = fold(sum, s.fp);
            updates++;
        }
        // expiries: this tick's wheel slot (stale entries of rescheduled sessions are skipped)
        auto &slot = wheel[now % wheel.size()];
        for (const auto &k : slot) {
            auto it = store.find(k);
            if (it == store.end() || it->second.expires > now) continue;
            verify_full(it->second, now);
            sum = fold(sum, it->second.fp ^ 0xdead);
            store.erase(it);
            expired++;
        }
        slot.clear();
        if (now % 16 == 15) slot.shrink_to_fit();
    }

    uint64_t final_sum() {                      // order-independent sweep of what is left
        uint64_t acc = 0;
        for (const auto &[k, s] : store) { verify_full(s, 0); acc += mix64(hash_str(k) ^ s.fp ^ s.hits); }
        return fold(sum, acc + store.size());
    }
};

// ---- phase 2: requests: trace headers, counters, C-style buffers -------------------------------
const char *const kRoutes[] = {"users", "sessions", "tokens", "orders", "items", "search", "health", "metrics",
                               "auth/login", "auth/logout", "auth/refresh", "billing/invoices", "billing/plans",
                               "files/upload", "files/download", "admin/audit", "admin/users", "graphql",
                               "feeds/home", "notifications"};
const char *const kMethods[] = {"GET", "POST", "PUT", "DELETE", "PATCH"};
const int kCodes[] = {200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 429, 500, 503};

using Headers = std::vector<std::pair<std::string, std::string>>;

Headers make_headers(Rng &r) {
    Headers h;
    h.emplace_back("traceparent", "00-" + hex(r, 32) + "-" + hex(r, 16) + "-01");
    h.emplace_back("x-request-id", hex(r, 8) + "-" + hex(r, 4) + "-" + hex(r, 4) + "-" + hex(r, 4) + "-" + hex(r, 12));
    if (r.chance(1, 2)) {
        std::string ts;
        size_t vendors = r.range(1, 6);
        for (size_t i = 0; i < vendors; i++) {
            if (i) ts += ',';
            ts += printable(r, r.range(2, 8)) + "=" + printable(r, r.range(8, 24));
        }
        h.emplace_back("tracestate", std::move(ts));
    }
    h.emplace_back("user-agent", "svc-" + printable(r, r.range(4, 12)) + "/" + std::to_string(r.below(20)) + "." +
                                     std::to_string(r.below(100)) + " (" + printable(r, r.range(10, 90)) + ")");
    h.emplace_back("content-type", r.chance(1, 2) ? "application/json" : "application/x-protobuf");
    if (r.chance(1, 5)) {
        std::string b;
        size_t items = r.range(1, 30);
        for (size_t i = 0; i < items; i++) {
            if (i) b += ',';
            b += printable(r, r.range(3, 12)) + "=" + printable(r, r.range(4, 40));
        }
        h.emplace_back("baggage", std::move(b));
    }
    if (r.chance(1, 3)) h.emplace_back("authorization", "Bearer " + printable(r, r.range(16, 64)));
    size_t extra = r.below(5);
    for (size_t i = 0; i < extra; i++) h.emplace_back("x-" + printable(r, r.range(3, 14)), printable(r, r.range(1, 60)));
    return h;
}

std::string serialize(const Headers &h) {
    std::string wire;                          // appended piecemeal: grows by reallocation
    for (const auto &[k, v] : h) { wire += k; wire += ": "; wire += v; wire += "\r\n"; }
    wire += "\r\n";
    return wire;
}

Headers parse(std::string_view wire) {
    Headers h;
    while (!wire.empty()) {
        size_t eol = wire.find("\r\n");
        if (eol == std::string_view::npos || eol == 0) break;
        std::string_view line = wire.substr(0, eol);
        wire.remove_prefix(eol + 2);
        size_t colon = line.find(": ");
        if (colon == std::string_view::npos) break;
        h.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 2)));
    }
    return h;
}

// C-style header block: malloc, realloc-doubling appends, like many C servers build responses.
struct CBuf {
    char *p = nullptr; size_t len = 0, cap = 0;
    void append(const char *s, size_t n) {
        if (len + n + 1 > cap) {
            size_t nc = cap ? cap : 48;
            while (len + n + 1 > nc) nc *= 2;
            char *q = static_cast<char *>(std::realloc(p, nc));
            if (!q) { std::fprintf(stderr, "workload: realloc(%zu) failed\n", nc); std::exit(4); }
            p = q; cap = nc;
        }
        std::memcpy(p + len, s, n);
        len += n;
        p[len] = 0;
    }
    ~CBuf() { std::free(p); }
};

struct alignas(64) CounterBlock { uint64_t v[8]; };   // over-aligned new/delete

struct RequestPhase {
    std::unordered_map<std::string, uint64_t> counters;
    std::map<std::string, std::vector<uint64_t>> latency;   // node-based, ordered: histograms per route
    uint64_t requests = 0, scrapes = 0, header_bytes = 0;
    uint64_t sum = 0x7e9;

    void scrape() {
        std::vector<std::pair<std::string, uint64_t>> snap(counters.begin(), counters.end());
        std::sort(snap.begin(), snap.end());
        std::string out;
        for (const auto &[k, v] : snap) { out += k; out += ' '; out += std::to_string(v); out += '\n'; }
        for (const auto &[k, b] : latency) {
            out += k;
            for (uint64_t x : b) { out += ' '; out += std::to_string(x); }
            out += '\n';
        }
        sum = fold(sum, hash_str(out));
        // reset: drop the counters that were scraped at an odd value (services forget idle series)
        for (const auto &[k, v] : snap) if (v & 1) counters.erase(k);
        scrapes++;
    }

    void request(Rng &r) {
        Headers h = make_headers(r);
        std::string wire = serialize(h);
        header_bytes += wire.size();
        Headers back = parse(wire);
        if (back != h) integrity_error("header round trip", requests);
        uint64_t hh = hash_str(wire);
        // tracing: copy of the trace id, span name, a few attributes, a short-lived span list
        std::string trace_id = back[0].second.substr(3, 32);
        std::vector<std::string> spans;
        size_t nspans = r.range(1, 6);
        for (size_t i = 0; i < nspans; i++) spans.push_back(std::string(kRoutes[r.below(20)]) + "#" + trace_id.substr(i, 8));
        for (const auto &s : spans) hh = fold(hh, hash_str(s));

        // C-style: header block via realloc growth, strdup'd values, calloc'd scratch, aligned buffers
        CBuf cb;
        for (const auto &[k, v] : back) { cb.append(k.data(), k.size()); cb.append(": ", 2); cb.append(v.data(), v.size()); cb.append("\r\n", 2); }
        if (cb.len != wire.size() - 2 || std::memcmp(cb.p, wire.data(), cb.len) != 0) integrity_error("C header block", requests);
        char *tid = strdup(trace_id.c_str());
        size_t nslots = r.range(4, 96);
        uint64_t *scratch = static_cast<uint64_t *>(std::calloc(nslots, sizeof(uint64_t)));
        for (size_t i = 0; i < nslots; i++) if (scratch[i]) { integrity_error("calloc returned non-zero memory", requests); break; }
        for (size_t i = 0; i < nslots; i++) scratch[i] = i * 7 + tid[i % 32];
        hh = fold(hh, hash_bytes(scratch, nslots * 8));
        if (r.chance(1, 8)) {
            void *a = nullptr;
            size_t al = size_t(16) << r.below(6);   // 16..512
            if (posix_memalign(&a, al, r.range(1, 2048)) != 0 || (reinterpret_cast<uintptr_t>(a) & (al - 1)))
                integrity_error("posix_memalign", al);
            std::free(a);
            void *b = std::aligned_alloc(64, 64 * r.range(1, 40));
            if (!b || (reinterpret_cast<uintptr_t>(b) & 63)) integrity_error("aligned_alloc", 64);
            std::free(b);
            auto *cbk = new CounterBlock{};
            if (reinterpret_cast<uintptr_t>(cbk) & 63) integrity_error("aligned new", 64);
            cbk->v[0] = requests;
            delete cbk;
        }
        std::free(scratch);
        std::free(tid);

        // response body: built by appends (realloc doubling), sometimes past 4 KiB, then shrunk to
        // fit with realloc -- both directions across the small-object limit
        if (r.chance(1, 4)) {
            size_t target = r.chance(1, 8) ? r.range(4097, 12288) : r.range(64, 4096);
            CBuf body;
            char chunk[256];
            uint64_t hb = 0;
            while (body.len < target) {
                size_t n = std::min<size_t>(target - body.len, r.range(16, 256));
                fill_bytes(chunk, n, r.next());
                body.append(chunk, n);
            }
            hb = hash_bytes(body.p, body.len, 9);
            char *q = static_cast<char *>(std::realloc(body.p, body.len + 1));
            if (!q) { std::fprintf(stderr, "workload: realloc shrink failed\n"); std::exit(4); }
            body.p = q; body.cap = body.len + 1;
            if (hash_bytes(body.p, body.len, 9) != hb) integrity_error("realloc lost data", requests);
            hh = fold(hh, hb);
        }

        // metrics: label strings built per request (a temporary allocation each, as in real code)
        const char *route = kRoutes[r.below(20)];
        int code = kCodes[r.below(16)];
        std::string key = std::string("http_requests_total{method=\"") + kMethods[r.below(5)] + "\",route=\"/api/v1/" +
                          route + "\",code=\"" + std::to_string(code) + "\"}";
        counters[key]++;
        counters[std::string("http_request_header_bytes{route=\"/api/v1/") + route + "\"}"] += wire.size();
        auto &hist = latency[route];
        if (hist.empty()) hist.assign(12, 0);
        hist[std::min<uint64_t>(11, 63 - __builtin_clzll(r.range(1, 4096)))]++;

        sum = fold(sum, hh);
        requests++;
        if (requests % 20000 == 0) scrape();
    }
};

// ---- phase 3: producer / consumer --------------------------------------------------------------
struct Msg {                                   // malloc'd header + payload
    uint64_t seq;
    uint32_t len;
    uint32_t kind;                             // 0: Msg, 1: Envelope
    uint64_t hash;
    char payload[];
};
struct Envelope {                              // new'd C++ message
    uint64_t seq;
    std::string topic;
    std::vector<char> body;
    uint64_t hash;
};
struct Ack { uint64_t seq; uint64_t hash; char note[]; };

// Blocking queue of message batches, as a service's worker hand-off would use (mutex + condvars;
// threads sleep instead of spinning, so results don't depend on how the two cores are shared).
class BatchQueue {
public:
    explicit BatchQueue(size_t cap) : cap_(cap) {}
    void push(std::vector<void *> &&batch) {
        std::unique_lock<std::mutex> l(m_);
        nonfull_.wait(l, [&] { return q_.size() < cap_; });
        q_.push_back(std::move(batch));
        l.unlock();
        nonempty_.notify_one();
    }
    bool pop(std::vector<void *> &out, bool block) {   // false: empty (and closed, when blocking)
        std::unique_lock<std::mutex> l(m_);
        if (block) nonempty_.wait(l, [&] { return !q_.empty() || closed_; });
        if (q_.empty()) return false;
        out = std::move(q_.front());
        q_.pop_front();
        l.unlock();
        nonfull_.notify_one();
        return true;
    }
    void close() {
        { std::lock_guard<std::mutex> l(m_); closed_ = true; }
        nonempty_.notify_all();
    }
private:
    std::mutex m_;
    std::condition_variable nonempty_, nonfull_;
    std::deque<std::vector<void *>> q_;
    size_t cap_;
    bool closed_ = false;
};

struct PipelinePhase {
    static constexpr size_t kBatch = 64;
    uint64_t messages = 0;
    BatchQueue to_consumer{32};                // at most 32 * 64 messages in flight
    BatchQueue to_producer{size_t(-1)};        // acks: unbounded (the producer drains it every batch)
    uint64_t prod_sum = 0x9a, cons_sum = 0xc0, bytes = 0, acks = 0;

    static size_t msg_size(Rng &r) {
        uint64_t p = r.below(1000);
        if (p < 700) return r.range(16, 256);
        if (p < 950) return r.range(257, 1024);
        if (p < 995) return r.range(1025, 4096);
        return r.range(4097, 16384);
    }

    void take_acks(const std::vector<void *> &batch) {
        for (void *p : batch) {
            Ack *a = static_cast<Ack *>(p);
            size_t n = std::strlen(a->note);
            if (hash_bytes(a->note, n, a->seq) != a->hash) integrity_error("ack contents", a->seq);
            prod_sum = fold(prod_sum, a->hash);
            std::free(a);
            acks++;
        }
    }

    void producer() {
        Rng r(0xFEED);
        std::vector<void *> batch, acked;
        for (uint64_t seq = 0; seq < messages; seq++) {
            size_t n = msg_size(r);
            void *out;
            if (r.chance(1, 4)) {
                auto *e = new Envelope;
                e->seq = seq;
                e->topic = "events." + printable(r, r.range(4, 40));
                e->body.resize(n);
                fill_bytes(e->body.data(), n, seq * 31 + 7);
                e->hash = fold(hash_str(e->topic), hash_bytes(e->body.data(), n, seq));
                out = reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(e) | 1);   // tag: low bit marks an Envelope
            } else {
                Msg *m = static_cast<Msg *>(std::malloc(sizeof(Msg) + n));
                if (!m) { std::fprintf(stderr, "workload: malloc(%zu) failed\n", sizeof(Msg) + n); std::exit(4); }
                m->seq = seq; m->len = uint32_t(n); m->kind = 0;
                fill_bytes(m->payload, n, seq * 31 + 7);
                m->hash = hash_bytes(m->payload, n, seq);
                out = m;
            }
            if (batch.empty()) batch.reserve(kBatch);
            batch.push_back(out);
            if (batch.size() == kBatch || seq + 1 == messages) {
                to_consumer.push(std::move(batch));
                batch = std::vector<void *>();
                while (to_producer.pop(acked, false)) take_acks(acked);
            }
        }
        to_consumer.close();
        while (to_producer.pop(acked, true)) take_acks(acked);   // until the consumer closes it
    }

    void consumer() {
        uint64_t expect = 0;
        std::vector<void *> batch, acks_out;
        while (to_consumer.pop(batch, true)) {
            for (void *p : batch) {
                uint64_t h, seq;
                if (reinterpret_cast<uintptr_t>(p) & 1) {
                    auto *e = reinterpret_cast<Envelope *>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t(1));
                    seq = e->seq;
                    h = fold(hash_str(e->topic), hash_bytes(e->body.data(), e->body.size(), seq));
                    if (h != e->hash) integrity_error("envelope contents", seq);
                    bytes += e->body.size();
                    delete e;
                } else {
                    Msg *m = static_cast<Msg *>(p);
                    seq = m->seq;
                    h = hash_bytes(m->payload, m->len, seq);
                    if (h != m->hash) integrity_error("message contents", seq);
                    bytes += m->len;
                    std::free(m);
                }
                if (seq != expect) integrity_error("message order", seq);
                cons_sum = fold(cons_sum, h);
                if ((seq & 7) == 7) {           // ack every 8th message back to the producer
                    char note[96];
                    int n = std::snprintf(note, sizeof note, "ack seq=%" PRIu64 " h=%016" PRIx64 " ok", seq, h);
                    Ack *a = static_cast<Ack *>(std::malloc(sizeof(Ack) + size_t(n) + 1 + (seq & 63)));
                    if (!a) { std::fprintf(stderr, "workload: malloc failed\n"); std::exit(4); }
                    a->seq = seq;
                    std::memcpy(a->note, note, size_t(n) + 1);
                    a->hash = hash_bytes(a->note, size_t(n), seq);
                    acks_out.push_back(a);
                }
                expect++;
            }
            if (!acks_out.empty()) { to_producer.push(std::move(acks_out)); acks_out = std::vector<void *>(); }
        }
        if (expect != messages) integrity_error("messages lost", expect);
        to_producer.close();
    }

    uint64_t run(uint64_t n) {
        messages = n;
        std::thread prod([this] { producer(); });
        consumer();
        prod.join();
        if (acks != messages / 8) integrity_error("acks lost", acks);
        return fold(prod_sum, cons_sum);
    }
};

[[noreturn]] void usage(int code) {
    std::fprintf(code ? stderr : stdout,
                 "usage: workload [--scale N]\n"
                 "  --scale N   multiply the amount of work by N (N > 0, may be fractional; default 1)\n"
                 "Prints phase timings and a line 'checksum: <hex>' that is the same under any correct allocator.\n"
                 "Exit status: 0 ok, 2 bad usage, 3 integrity errors detected.\n");
    std::exit(code);
}

}  // namespace

int main(int argc, char **argv) {
    double scale = 1.0;
    for (int i = 1; i < argc; i++) {
        std::string_view a = argv[i];
        if (a == "--help" || a == "-h") usage(0);
        std::string_view v;
        if (a == "--scale") {
            if (i + 1 >= argc) { std::fprintf(stderr, "workload: --scale needs a value\n"); usage(2); }
            v = argv[++i];
        } else if (a.substr(0, 8) == "--scale=") {
            v = a.substr(8);
        } else {
            std::fprintf(stderr, "workload: unknown argument '%s'\n", argv[i]);
            usage(2);
        }
        char *end = nullptr;
        std::string vs(v);
        scale = std::strtod(vs.c_str(), &end);
        if (vs.empty() || *end || !(scale > 0) || scale > 1e6) {
            std::fprintf(stderr, "workload: bad --scale value '%s' (want a number > 0)\n", vs.c_str());
            usage(2);
        }
    }
    auto scaled = [scale](double base) { return std::max<uint64_t>(1, uint64_t(base * scale + 0.5)); };
    const uint64_t rounds = scaled(95), nrequests = scaled(150000), nmessages = scaled(2000000);

    std::printf("workload: scale=%g rounds=%" PRIu64 " requests=%" PRIu64 " messages=%" PRIu64 "\n",
                scale, rounds, nrequests, nmessages);
    std::fflush(stdout);
    uint64_t checksum = 0xC0FFEE;
    double t_all = now_s();

    auto sessions = std::make_unique<SessionPhase>();
    double t0 = now_s();
    {
        Rng r(0x5E5510);
        for (uint64_t now = 1; now <= rounds; now++) sessions->round(r, now);
    }
    uint64_t hs = sessions->sum;
    double t_sessions = now_s() - t0;
    std::printf("phase sessions  %8.3f s  live=%zu peak_live=%" PRIu64 " inserts=%" PRIu64 " hits=%" PRIu64
                " misses=%" PRIu64 " updates=%" PRIu64 " expired=%" PRIu64 "  [%016" PRIx64 "]\n",
                t_sessions, sessions->store.size(), sessions->peak_live, sessions->inserts, sessions->hits,
                sessions->misses, sessions->updates, sessions->expired, hs);
    std::fflush(stdout);
    checksum = fold(checksum, hs);

    auto requests = std::make_unique<RequestPhase>();
    t0 = now_s();
    {
        Rng r(0x8E0);
        for (uint64_t i = 0; i < nrequests; i++) requests->request(r);
        requests->scrape();
    }
    double t_requests = now_s() - t0;
    std::printf("phase requests  %8.3f s  requests=%" PRIu64 " header_bytes=%" PRIu64 " scrapes=%" PRIu64
                " series=%zu  [%016" PRIx64 "]\n",
                t_requests, requests->requests, requests->header_bytes, requests->scrapes, requests->counters.size(),
                requests->sum);
    std::fflush(stdout);
    checksum = fold(checksum, requests->sum);

    auto pipeline = std::make_unique<PipelinePhase>();
    t0 = now_s();
    uint64_t hp = pipeline->run(nmessages);
    double t_pipeline = now_s() - t0;
    std::printf("phase pipeline  %8.3f s  messages=%" PRIu64 " bytes=%" PRIu64 " acks=%" PRIu64 " (2 threads)  [%016" PRIx64 "]\n",
                t_pipeline, pipeline->messages, pipeline->bytes, pipeline->acks, hp);
    std::fflush(stdout);
    checksum = fold(checksum, hp);
    pipeline.reset();

    t0 = now_s();
    uint64_t hf = sessions->final_sum();
    size_t left = sessions->store.size();
    sessions.reset();
    requests.reset();
    double t_teardown = now_s() - t0;
    std::printf("phase teardown  %8.3f s  sessions_freed=%zu  [%016" PRIx64 "]\n", t_teardown, left, hf);
    checksum = fold(checksum, hf);

    std::printf("total           %8.3f s\n", now_s() - t_all);
    if (g_errors) {
        std::printf("integrity errors: %" PRIu64 "\n", g_errors);
        std::fprintf(stderr, "workload: %" PRIu64 " integrity errors: the allocator returned memory it should not have\n", g_errors);
    }
    std::printf("checksum: %016" PRIx64 "\n", checksum);
    std::fflush(stdout);
    return g_errors ? 3 : 0;
}
