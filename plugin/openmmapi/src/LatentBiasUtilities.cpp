#include <cstdio>
#include "internal/LatentBiasUtilities.h"
#include "openmm/OpenMMException.h"
#include <cctype>
#include <cstdlib>

using namespace std;

namespace LatentBiasPlugin {

static const char* BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

string base64Encode(const string& data) {
    string out;
    out.reserve(4 * ((data.size() + 2) / 3));
    size_t i = 0;
    const unsigned char* bytes = reinterpret_cast<const unsigned char*>(data.data());
    for (; i + 2 < data.size(); i += 3) {
        unsigned int v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
        out += BASE64_ALPHABET[(v >> 18) & 63];
        out += BASE64_ALPHABET[(v >> 12) & 63];
        out += BASE64_ALPHABET[(v >> 6) & 63];
        out += BASE64_ALPHABET[v & 63];
    }
    size_t rest = data.size() - i;
    if (rest == 1) {
        unsigned int v = bytes[i] << 16;
        out += BASE64_ALPHABET[(v >> 18) & 63];
        out += BASE64_ALPHABET[(v >> 12) & 63];
        out += "==";
    }
    else if (rest == 2) {
        unsigned int v = (bytes[i] << 16) | (bytes[i + 1] << 8);
        out += BASE64_ALPHABET[(v >> 18) & 63];
        out += BASE64_ALPHABET[(v >> 12) & 63];
        out += BASE64_ALPHABET[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

static int base64Value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

string base64Decode(const string& text) {
    string out;
    out.reserve(3 * text.size() / 4);
    unsigned int buffer = 0;
    int bits = 0;
    bool padding = false;
    for (char c : text) {
        if (isspace(static_cast<unsigned char>(c)))
            continue;
        if (c == '=') {
            padding = true;
            continue;
        }
        int v = base64Value(c);
        if (v < 0 || padding)
            throw OpenMM::OpenMMException("LatentBiasForce: invalid base64 data in the serialized model");
        buffer = (buffer << 6) | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((buffer >> bits) & 0xFF);
        }
    }
    return out;
}

bool findTopLevelJsonInteger(const string& json, const string& key, long long& value) {
    int depth = 0;
    size_t i = 0, n = json.size();
    while (i < n) {
        char c = json[i];
        if (c == '"') {
            // Read a string; at depth 1 it may be a key.
            size_t start = ++i;
            string text;
            while (i < n && json[i] != '"') {
                if (json[i] == '\\' && i + 1 < n) {
                    text += json[i + 1];
                    i += 2;
                }
                else
                    text += json[i++];
            }
            i++;
            (void) start;
            if (depth == 1 && text == key) {
                size_t j = i;
                while (j < n && isspace(static_cast<unsigned char>(json[j])))
                    j++;
                if (j < n && json[j] == ':') {
                    j++;
                    while (j < n && isspace(static_cast<unsigned char>(json[j])))
                        j++;
                    const char* begin = json.c_str() + j;
                    char* end = nullptr;
                    long long v = strtoll(begin, &end, 10);
                    if (end == begin || (*end != ',' && *end != '}' && !isspace(static_cast<unsigned char>(*end))))
                        return false;
                    value = v;
                    return true;
                }
            }
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']')
            depth--;
        i++;
    }
    return false;
}

string checksum64(const string& data) {
    unsigned long long h = 14695981039346656037ULL;
    for (unsigned char c : data) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    char buffer[17];
    snprintf(buffer, sizeof(buffer), "%016llx", h);
    return buffer;
}

} // namespace LatentBiasPlugin
