#include "internal/LatentBiasChecksum.h"
#include "openmm/OpenMMException.h"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

using namespace std;
using OpenMM::OpenMMException;

namespace LatentBiasPlugin {

// ------------------------------------------------------------------------------------------------------ SHA-256

namespace {

const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) {
    return (x >> n) | (x << (32 - n));
}

void compress(uint32_t h[8], const unsigned char* block) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t) block[4 * i] << 24 | (uint32_t) block[4 * i + 1] << 16 | (uint32_t) block[4 * i + 2] << 8 |
               (uint32_t) block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

} // namespace

string sha256(const string& data) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const unsigned char* bytes = reinterpret_cast<const unsigned char*>(data.data());
    size_t n = data.size(), full = n / 64 * 64;
    for (size_t i = 0; i < full; i += 64)
        compress(h, bytes + i);
    // the last partial block, 0x80, zeros and the message length in bits (big-endian), in one or two blocks
    unsigned char tail[128] = {0};
    size_t rest = n - full;
    if (rest > 0)
        memcpy(tail, bytes + full, rest);
    tail[rest] = 0x80;
    size_t tailSize = (rest + 1 + 8 <= 64 ? 64 : 128);
    uint64_t bits = (uint64_t) n * 8;
    for (int i = 0; i < 8; i++)
        tail[tailSize - 1 - i] = (unsigned char) (bits >> (8 * i));
    for (size_t i = 0; i < tailSize; i += 64)
        compress(h, tail + i);
    string out(32, '\0');
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (char) (h[i] >> (24 - 8 * j));
    return out;
}

string sha256Hex(const string& data) {
    static const char* hex = "0123456789abcdef";
    string digest = sha256(data), out;
    out.reserve(64);
    for (unsigned char c : digest) {
        out += hex[c >> 4];
        out += hex[c & 15];
    }
    return out;
}

// ------------------------------------------------------------------------------------------ zip CRC-32

uint32_t crc32(const string& data) {
    static uint32_t table[256];
    static bool ready = false;
    if (!ready) {  // the reflected polynomial 0xEDB88320 of zip/zlib
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = true;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : data)
        c = table[(c ^ b) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

map<string, uint32_t> zipEntryCrcs(const string& data) {
    map<string, uint32_t> crcs;
    auto u16 = [&](size_t at) -> uint32_t {
        return (unsigned char) data[at] | (uint32_t) (unsigned char) data[at + 1] << 8;
    };
    auto u32 = [&](size_t at) -> uint32_t { return u16(at) | u16(at + 2) << 16; };
    if (data.size() < 22)
        return crcs;
    // the end-of-central-directory record: the last "PK\5\6" with room for its 22 bytes (and a comment up to 64 KiB)
    size_t end = string::npos;
    size_t lowest = data.size() > 22 + 65535 ? data.size() - 22 - 65535 : 0;
    for (size_t at = data.size() - 22 + 1; at-- > lowest;)
        if (u32(at) == 0x06054b50u) {
            end = at;
            break;
        }
    if (end == string::npos)
        return crcs;
    size_t count = u16(end + 10), offset = u32(end + 16);
    if (count == 0xFFFF || offset == 0xFFFFFFFFu) {  // ZIP64: find the ZIP64 end record through its locator
        if (end < 20 || u32(end - 20) != 0x07064b50u)
            return crcs;
        uint64_t z64 = u32(end - 20 + 8) | (uint64_t) u32(end - 20 + 12) << 32;
        if (z64 + 56 > data.size() || u32(z64) != 0x06064b50u)
            return crcs;
        count = u32(z64 + 32);
        offset = u32(z64 + 48) | (uint64_t) u32(z64 + 52) << 32;
    }
    for (size_t k = 0, at = offset; k < count; k++) {
        if (at + 46 > data.size() || u32(at) != 0x02014b50u)
            return map<string, uint32_t>();  // not a readable central directory: no CRCs rather than wrong ones
        size_t nameLength = u16(at + 28), extraLength = u16(at + 30), commentLength = u16(at + 32);
        if (at + 46 + nameLength > data.size())
            return map<string, uint32_t>();
        crcs[data.substr(at + 46, nameLength)] = u32(at + 16);
        at += 46 + nameLength + extraLength + commentLength;
    }
    return crcs;
}

// ------------------------------------------------------------------------------------------ zip structure check

namespace {

/** Whether bytes are UTF-8 as Python's strict decoder reads it (no overlong forms, surrogates or code points above
 *  U+10FFFF). */
bool validUtf8(const string& s) {
    for (size_t i = 0; i < s.size();) {
        unsigned char c = s[i];
        int extra;
        unsigned char low = 0x80, high = 0xBF;  // range of the first continuation byte
        if (c < 0x80)
            extra = 0;
        else if (c >= 0xC2 && c <= 0xDF)
            extra = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2;
            if (c == 0xE0)
                low = 0xA0;
            if (c == 0xED)
                high = 0x9F;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3;
            if (c == 0xF0)
                low = 0x90;
            if (c == 0xF4)
                high = 0x8F;
        }
        else
            return false;
        if (extra > 0 && i + extra >= s.size())
            return false;
        for (int k = 1; k <= extra; k++) {
            unsigned char b = s[i + k];
            if (k == 1 ? (b < low || b > high) : (b < 0x80 || b > 0xBF))
                return false;
        }
        i += extra + 1;
    }
    return true;
}

} // namespace

string zipStructureProblem(const string& data) {
    const size_t size = data.size();
    auto u16 = [&](size_t at) -> uint32_t {
        return (unsigned char) data[at] | (uint32_t) (unsigned char) data[at + 1] << 8;
    };
    auto u32 = [&](size_t at) -> uint32_t { return u16(at) | u16(at + 2) << 16; };
    auto u64 = [&](size_t at) -> uint64_t { return u32(at) | (uint64_t) u32(at + 4) << 32; };
    auto quoted = [](const string& name) { return "'" + name + "'"; };
    if (size < 22)
        return "the file is too short for a zip archive";
    // 1. The end-of-central-directory record, as Python's zipfile._EndRecData finds it: the last 22 bytes when they
    //    are one without a comment, else the last signature within 64 KiB + 22 bytes of the end. Stricter than Python:
    //    the record and its comment must end the file.
    size_t end = string::npos;
    if (u32(size - 22) == 0x06054b50u && u16(size - 2) == 0)
        end = size - 22;
    else {
        size_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
        for (size_t at = size - 4 + 1; at-- > lowest;)
            if (u32(at) == 0x06054b50u) {
                end = at;
                break;
            }
        if (end == string::npos || end + 22 > size || end + 22 + u16(end + 20) != size)
            return "its end-of-central-directory record is missing or damaged";
    }
    if (u16(end + 4) != 0 || u16(end + 6) != 0)
        return "its end-of-central-directory record names another disk (multi-disk archives are not readable)";
    uint64_t count = u16(end + 10), cdSize = u32(end + 12), cdOffset = u32(end + 16);
    size_t cdEnd = end;  // where the central directory must end
    // 2. ZIP64, as Python's _EndRecData64 reads it (the zip64 end record right before its locator, right before the
    //    end record); libtorch's miniz follows the locator's offset instead, so the two must agree.
    if (end >= 20 && u32(end - 20) == 0x07064b50u) {
        size_t locator = end - 20;
        if (u32(locator + 4) != 0 || u32(locator + 16) > 1)
            return "its zip64 end locator names another disk (multi-disk archives are not readable)";
        if (locator < 56 || u32(locator - 56) != 0x06064b50u || u64(locator + 8) != locator - 56 ||
                u64(locator - 56 + 4) != 44)
            return "its zip64 end-of-central-directory record is missing or damaged";
        size_t z = locator - 56;
        if (u32(z + 16) != 0 || u32(z + 20) != 0 || u64(z + 24) != u64(z + 32))
            return "its zip64 end-of-central-directory record names another disk (multi-disk archives are not "
                   "readable)";
        count = u64(z + 32);
        cdSize = u64(z + 40);
        cdOffset = u64(z + 48);
        cdEnd = z;
    }
    else if (count == 0xFFFF || cdSize == 0xFFFFFFFFu || cdOffset == 0xFFFFFFFFu)
        return "its end-of-central-directory record refers to a zip64 record that is missing";
    else if (u16(end + 8) != count)
        return "its end-of-central-directory record is damaged (two different entry counts)";
    // Python reads the central directory as the cdSize bytes before cdEnd and shifts every offset by the difference
    // to cdOffset (data prepended to the archive); miniz reads it at cdOffset. Both agree only when they coincide.
    if (cdSize > cdEnd || cdOffset != cdEnd - cdSize)
        return "its central directory is not where its end record says";
    // 3. The central directory, as Python's ZipFile._RealGetContents and ZipInfo._decodeExtra read it.
    struct Entry {
        string name;
        uint64_t offset, compressed;
        uint32_t flags;
    };
    vector<Entry> entries;
    map<string, int> seen;
    for (size_t at = cdOffset; at < cdEnd;) {
        string label = "central directory entry " + to_string(entries.size() + 1);
        if (cdEnd - at < 46 || u32(at) != 0x02014b50u)
            return "its " + label + " is damaged (no entry signature)";
        size_t nameLength = u16(at + 28), extraLength = u16(at + 30), commentLength = u16(at + 32);
        if (46 + nameLength + extraLength + commentLength > cdEnd - at)
            return "its " + label + " runs past the end of the central directory";
        Entry entry;
        entry.name = data.substr(at + 46, nameLength);
        label = "central directory entry of " + quoted(entry.name);
        entry.flags = u16(at + 8);
        if ((unsigned char) data[at + 6] > 63)
            return "its " + label + " needs zip version " + to_string((unsigned char) data[at + 6] / 10) + "." +
                   to_string((unsigned char) data[at + 6] % 10) + " to extract (6.3 is the highest readable)";
        if (entry.flags & 0x0061)
            return "its " + label + " says the entry is encrypted or patched (flags " + to_string(entry.flags) + ")";
        uint32_t method = u16(at + 10);
        if (method != 0 && method != 8)
            return "its " + label + " names compression method " + to_string(method) + " (stored and deflated are "
                   "readable)";
        if (entry.name.empty() || entry.name.find('\0') != string::npos)
            return "its " + label + " has an empty name or a zero byte in it";
        if ((entry.flags & 0x800) && !validUtf8(entry.name))
            return "its " + label + " has a name that is not valid UTF-8";
        uint64_t uncompressed = u32(at + 24);
        entry.compressed = u32(at + 20);
        entry.offset = u32(at + 42);
        for (size_t e = at + 46 + nameLength, eEnd = e + extraLength; eEnd - e >= 4;) {
            size_t type = u16(e), length = u16(e + 2);
            if (length + 4 > eEnd - e)
                return "its " + label + " has a corrupt extra field";
            if (type == 1) {  // ZIP64: the 8-byte values of the fields the entry marks with 0xFFFFFFFF, in order
                size_t f = e + 4, fEnd = e + 4 + length;
                for (uint64_t* value : {&uncompressed, &entry.compressed, &entry.offset}) {
                    if (*value != 0xFFFFFFFFu)
                        continue;
                    if (fEnd - f < 8)
                        return "its " + label + " has a corrupt zip64 extra field";
                    *value = u64(f);
                    f += 8;
                }
            }
            e += 4 + length;
        }
        if (seen[entry.name]++ > 0)
            return "its central directory lists " + quoted(entry.name) + " twice";
        entries.push_back(entry);
        at += 46 + nameLength + extraLength + commentLength;
    }
    if (entries.size() != count)
        return "its end record counts " + to_string(count) + " entries but its central directory holds " +
               to_string(entries.size());
    // 4. Each entry's local header, as Python's ZipFile.open reads it before the data: the signature and the name
    //    (decoded with the local header's own UTF-8 flag) must match the central directory. libtorch's miniz reads
    //    neither, only the local name and extra lengths to find the data. The data must end before the next entry's
    //    header (Python 3.12's overlap check).
    vector<size_t> order(entries.size());
    for (size_t k = 0; k < order.size(); k++)
        order[k] = k;
    sort(order.begin(), order.end(), [&](size_t a, size_t b) { return entries[a].offset < entries[b].offset; });
    for (size_t k = 0; k < order.size(); k++) {
        const Entry& entry = entries[order[k]];
        uint64_t limit = k + 1 < order.size() ? entries[order[k + 1]].offset : cdOffset;
        string label = "local header of " + quoted(entry.name);
        if (entry.offset >= limit || limit - entry.offset < 30 || u32(entry.offset) != 0x04034b50u)
            return "the " + label + " is damaged (no header signature where the central directory points)";
        size_t at = entry.offset, nameLength = u16(at + 26), extraLength = u16(at + 28);
        uint32_t flags = u16(at + 6);
        if (30 + nameLength + extraLength > limit - at)
            return "the " + label + " runs into the next entry";
        string name = data.substr(at + 30, nameLength);
        bool ascii = std::all_of(name.begin(), name.end(), [](char c) { return (unsigned char) c < 0x80; });
        if (name != entry.name || (((flags ^ entry.flags) & 0x800) && !ascii) || ((flags & 0x800) && !validUtf8(name)))
            return "the " + label + " names it differently (" + quoted(name) + ") from the central directory";
        if (entry.compressed > limit - (at + 30 + nameLength + extraLength))
            return "the data of " + quoted(entry.name) + " run into the next entry";
    }
    return "";
}

// ------------------------------------------------------------------------------------ Python's float repr

string pythonFloatRepr(double x) {
    if (std::isnan(x))
        return "NaN";  // json.dumps writes float('nan') so (allow_nan=True)
    if (std::isinf(x))
        return x > 0 ? "Infinity" : "-Infinity";
    if (x == 0)
        return std::signbit(x) ? "-0.0" : "0.0";
    // Shortest decimal digits that read back as x (Python's repr, David Gay's mode 0): among the candidates of the
    // smallest length that round-trip, the one nearest to x. printf's %.*e gives the nearest one of each length; its
    // neighbours are tried too (at a power of two the rounding interval is asymmetric).
    string digits;
    int exponent = 0;
    bool negative = x < 0;
    for (int precision = 1; precision <= 17 && digits.empty(); precision++) {
        char buffer[64];
        snprintf(buffer, sizeof(buffer), "%.*e", precision - 1, std::fabs(x));
        string text(buffer);
        size_t e = text.find('e');
        string mantissa;
        for (size_t i = 0; i < e; i++)
            if (text[i] != '.')
                mantissa += text[i];
        int exp10 = atoi(text.c_str() + e + 1);
        double best = -1;
        for (int delta : {0, -1, 1}) {
            // mantissa (precision digits) + delta units in the last place, as a decimal string
            string m = mantissa;
            int ex = exp10;
            if (delta != 0) {
                int i = (int) m.size() - 1;
                if (delta > 0) {
                    while (i >= 0 && m[i] == '9')
                        m[i--] = '0';
                    if (i < 0) {
                        m.insert(m.begin(), '1');
                        m.pop_back();
                        ex++;
                    }
                    else
                        m[i]++;
                }
                else {
                    while (i >= 0 && m[i] == '0')
                        m[i--] = '9';
                    if (i < 0)
                        continue;
                    m[i]--;
                    if (m[0] == '0') {  // 1.00e5 - 1 unit: 9.99e4 (same number of digits)
                        m.erase(m.begin());
                        m += '9';
                        ex--;
                    }
                }
            }
            string candidate = m.substr(0, 1) + (m.size() > 1 ? "." + m.substr(1) : "") + "e" + to_string(ex);
            double value = strtod(candidate.c_str(), nullptr);
            if (value != std::fabs(x))
                continue;
            long double distance = fabsl(strtold(candidate.c_str(), nullptr) - (long double) std::fabs(x));
            if (digits.empty() || distance < best) {
                digits = m;
                exponent = ex;
                best = (double) distance;
            }
        }
    }
    while (digits.size() > 1 && digits.back() == '0')
        digits.pop_back();
    string out = negative ? "-" : "";
    int decpt = exponent + 1, n = (int) digits.size();
    if (decpt <= -4 || decpt > 16) {
        out += digits.substr(0, 1);
        if (n > 1)
            out += "." + digits.substr(1);
        char buffer[16];
        snprintf(buffer, sizeof(buffer), "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent));
        out += buffer;
    }
    else if (decpt <= 0)
        out += "0." + string(-decpt, '0') + digits;
    else if (decpt >= n)
        out += digits + string(decpt - n, '0') + ".0";
    else
        out += digits.substr(0, decpt) + "." + digits.substr(decpt);
    return out;
}

// ------------------------------------------------------------------------------------ canonical JSON

namespace {

/** json.loads (strict) followed by json.dumps(sort_keys=True), on the text directly. */
class Canonicalizer {
public:
    Canonicalizer(const string& text, map<string, string>* topLevel) : s(text), i(0), depth(0), topLevel(topLevel) {
    }
    string run(const string& dropKey) {
        skip();
        string out = value(dropKey.empty() ? nullptr : &dropKey);
        skip();
        if (i != s.size())
            fail("extra data after the JSON value");
        return out;
    }

private:
    const string& s;
    size_t i;
    int depth;
    map<string, string>* topLevel;
    [[noreturn]] void fail(const string& what) const {
        stringstream msg;
        msg << "invalid JSON at byte " << i << ": " << what;
        throw OpenMMException(msg.str());
    }
    void skip() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
            i++;
    }
    bool literal(const char* word) {
        size_t n = strlen(word);
        if (s.compare(i, n, word) != 0)
            return false;
        i += n;
        return true;
    }
    string value(const string* dropKey) {
        if (i >= s.size())
            fail("expecting a value");
        if (++depth > 200)
            fail("nesting deeper than 200 levels");
        string out;
        char c = s[i];
        if (c == '{')
            out = object(dropKey);
        else if (c == '[') {
            i++;
            skip();
            out = "[";
            if (i < s.size() && s[i] == ']')
                i++;
            else
                while (true) {
                    skip();
                    out += value(nullptr);
                    skip();
                    if (i < s.size() && s[i] == ',') {
                        i++;
                        out += ", ";
                        continue;
                    }
                    if (i >= s.size() || s[i] != ']')
                        fail("expecting ',' or ']'");
                    i++;
                    break;
                }
            out += "]";
        }
        else if (c == '"')
            out = encode(decodeString());
        else if (literal("true"))
            out = "true";
        else if (literal("false"))
            out = "false";
        else if (literal("null"))
            out = "null";
        else if (literal("NaN"))
            out = "NaN";
        else if (literal("Infinity"))
            out = "Infinity";
        else if (literal("-Infinity"))
            out = "-Infinity";
        else if (c == '-' || (c >= '0' && c <= '9'))
            out = number();
        else
            fail("expecting a value");
        depth--;
        return out;
    }
    string object(const string* dropKey) {
        i++;  // '{'
        vector<pair<u32string, string> > members;
        skip();
        if (i < s.size() && s[i] == '}')
            i++;
        else
            while (true) {
                skip();
                if (i >= s.size() || s[i] != '"')
                    fail("expecting a property name in double quotes");
                u32string key = decodeString();
                skip();
                if (i >= s.size() || s[i] != ':')
                    fail("expecting ':' delimiter");
                i++;
                skip();
                string v = value(nullptr);
                auto same = find_if(members.begin(), members.end(), [&](const pair<u32string, string>& m) {
                    return m.first == key;
                });
                if (same != members.end())
                    same->second = v;  // Python's dict keeps the last value of a repeated key
                else
                    members.emplace_back(key, v);
                skip();
                if (i < s.size() && s[i] == ',') {
                    i++;
                    continue;
                }
                if (i >= s.size() || s[i] != '}')
                    fail("expecting ',' or '}'");
                i++;
                break;
            }
        sort(members.begin(), members.end());
        if (depth == 1 && topLevel != nullptr)
            for (const auto& m : members) {
                string key;
                bool ascii = true;
                for (char32_t c : m.first) {
                    ascii = ascii && c < 0x80;
                    key += (char) c;
                }
                if (ascii)
                    (*topLevel)[key] = m.second;
            }
        string out = "{";
        bool first = true;
        for (const auto& m : members) {
            if (dropKey != nullptr && m.first == u32string(dropKey->begin(), dropKey->end()))
                continue;
            out += (first ? "" : ", ") + encode(m.first) + ": " + m.second;
            first = false;
        }
        return out + "}";
    }
    string number() {
        // Python's NUMBER_RE: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
        size_t start = i;
        if (s[i] == '-')
            i++;
        if (i < s.size() && s[i] == '0')
            i++;
        else if (i < s.size() && s[i] >= '1' && s[i] <= '9')
            while (i < s.size() && isdigit((unsigned char) s[i]))
                i++;
        else
            fail("expecting a value");
        bool isFloat = false;
        if (i + 1 < s.size() && s[i] == '.' && isdigit((unsigned char) s[i + 1])) {
            isFloat = true;
            i++;
            while (i < s.size() && isdigit((unsigned char) s[i]))
                i++;
        }
        if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
            size_t j = i + 1;
            if (j < s.size() && (s[j] == '+' || s[j] == '-'))
                j++;
            if (j < s.size() && isdigit((unsigned char) s[j])) {
                isFloat = true;
                i = j;
                while (i < s.size() && isdigit((unsigned char) s[i]))
                    i++;
            }
        }
        string token = s.substr(start, i - start);
        if (!isFloat)
            return token == "-0" ? "0" : token;  // int(token): the digits as written
        return pythonFloatRepr(strtod(token.c_str(), nullptr));
    }
    unsigned int hex4() {
        if (i + 4 > s.size())
            fail("invalid \\uXXXX escape");
        unsigned int v = 0;
        for (int k = 0; k < 4; k++) {
            char h = s[i + k];
            v <<= 4;
            if (h >= '0' && h <= '9') v |= h - '0';
            else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
            else fail("invalid \\uXXXX escape");
        }
        i += 4;
        return v;
    }
    /** A JSON string (at the opening quote) as code points; UTF-8 in the text is decoded, as json.loads does. */
    u32string decodeString() {
        i++;
        u32string out;
        while (true) {
            if (i >= s.size())
                fail("unterminated string");
            unsigned char c = s[i];
            if (c == '"') {
                i++;
                return out;
            }
            if (c < 0x20)
                fail("invalid control character in a string");
            if (c == '\\') {
                if (i + 1 >= s.size())
                    fail("unterminated string");
                char e = s[i + 1];
                i += 2;
                switch (e) {
                    case '"': out += U'"'; break;
                    case '\\': out += U'\\'; break;
                    case '/': out += U'/'; break;
                    case 'b': out += U'\b'; break;
                    case 'f': out += U'\f'; break;
                    case 'n': out += U'\n'; break;
                    case 'r': out += U'\r'; break;
                    case 't': out += U'\t'; break;
                    case 'u': {
                        unsigned int cp = hex4();
                        // a high surrogate followed by an escaped low surrogate is one code point (as in Python)
                        if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') {
                            size_t back = i;
                            i += 2;
                            unsigned int low = hex4();
                            if (low >= 0xDC00 && low <= 0xDFFF)
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                            else
                                i = back;
                        }
                        out += (char32_t) cp;
                        break;
                    }
                    default:
                        i -= 2;
                        fail("invalid escape");
                }
                continue;
            }
            // UTF-8
            int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
            if (extra < 0 || i + extra >= s.size())
                fail("invalid UTF-8");
            char32_t cp = extra == 0 ? c : extra == 1 ? (c & 0x1F) : extra == 2 ? (c & 0x0F) : (c & 0x07);
            for (int k = 1; k <= extra; k++) {
                unsigned char d = s[i + k];
                if ((d >> 6) != 2)
                    fail("invalid UTF-8");
                cp = (cp << 6) | (d & 0x3F);
            }
            static const char32_t minimum[4] = {0, 0x80, 0x800, 0x10000};
            if (cp < minimum[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                fail("invalid UTF-8");
            out += cp;
            i += extra + 1;
        }
    }
    /** Python's json.dumps string encoding with ensure_ascii=True. */
    static string encode(const u32string& text) {
        static const char* hex = "0123456789abcdef";
        string out = "\"";
        auto escape = [&](unsigned int u) {
            out += "\\u";
            for (int shift = 12; shift >= 0; shift -= 4)
                out += hex[(u >> shift) & 15];
        };
        for (char32_t c : text) {
            if (c == '"') out += "\\\"";
            else if (c == '\\') out += "\\\\";
            else if (c == '\n') out += "\\n";
            else if (c == '\r') out += "\\r";
            else if (c == '\t') out += "\\t";
            else if (c == '\b') out += "\\b";
            else if (c == '\f') out += "\\f";
            else if (c >= 0x20 && c <= 0x7E) out += (char) c;
            else if (c >= 0x10000) {
                unsigned int v = c - 0x10000;
                escape(0xD800 | (v >> 10));
                escape(0xDC00 | (v & 0x3FF));
            }
            else
                escape(c);
        }
        return out + "\"";
    }
};

} // namespace

string canonicalJson(const string& text, const string& dropKey, map<string, string>* topLevel) {
    return Canonicalizer(text, topLevel).run(dropKey);
}

} // namespace LatentBiasPlugin
