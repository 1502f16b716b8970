#include "internal/LatentBiasJson.h"
#include "openmm/OpenMMException.h"
#include <cmath>
#include <cstdlib>
#include <sstream>

using namespace std;
using OpenMM::OpenMMException;

namespace LatentBiasPlugin {

namespace {

class Parser {
public:
    explicit Parser(const string& text) : s(text), i(0), depth(0) {
    }
    JsonValue parseDocument() {
        JsonValue v = parseValue();
        skip();
        if (i != s.size())
            fail("unexpected text after the JSON value");
        return v;
    }

private:
    const string& s;
    size_t i;
    int depth;
    [[noreturn]] void fail(const string& what) const {
        stringstream msg;
        msg << "invalid JSON at byte " << i << ": " << what;
        throw OpenMMException(msg.str());
    }
    void skip() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))
            i++;
    }
    void expect(char c) {
        skip();
        if (i >= s.size() || s[i] != c)
            fail(string("expected '") + c + "'");
        i++;
    }
    JsonValue parseValue() {
        skip();
        if (i >= s.size())
            fail("unexpected end of text");
        if (++depth > 64)
            fail("nesting deeper than 64 levels");
        JsonValue v;
        char c = s[i];
        if (c == '{') {
            v.type = JsonValue::Object;
            i++;
            skip();
            if (i < s.size() && s[i] == '}')
                i++;
            else
                while (true) {
                    skip();
                    string key = parseString();
                    expect(':');
                    v.members.emplace_back(key, parseValue());
                    skip();
                    if (i < s.size() && s[i] == ',') {
                        i++;
                        continue;
                    }
                    expect('}');
                    break;
                }
        }
        else if (c == '[') {
            v.type = JsonValue::Array;
            i++;
            skip();
            if (i < s.size() && s[i] == ']')
                i++;
            else
                while (true) {
                    v.items.push_back(parseValue());
                    skip();
                    if (i < s.size() && s[i] == ',') {
                        i++;
                        continue;
                    }
                    expect(']');
                    break;
                }
        }
        else if (c == '"') {
            v.type = JsonValue::String;
            v.text = parseString();
        }
        else if (s.compare(i, 4, "true") == 0) {
            v.type = JsonValue::Bool;
            v.boolean = true;
            i += 4;
        }
        else if (s.compare(i, 5, "false") == 0) {
            v.type = JsonValue::Bool;
            i += 5;
        }
        else if (s.compare(i, 4, "null") == 0)
            i += 4;
        else if (c == '-' || (c >= '0' && c <= '9')) {
            const char* begin = s.c_str() + i;
            char* end = nullptr;
            v.type = JsonValue::Number;
            v.number = strtod(begin, &end);
            if (end == begin || !std::isfinite(v.number))
                fail("invalid number");
            i += end - begin;
        }
        else
            fail(string("unexpected character '") + c + "'");
        depth--;
        return v;
    }
    static void appendUtf8(string& out, unsigned int cp) {
        if (cp < 0x80)
            out += (char) cp;
        else if (cp < 0x800) {
            out += (char) (0xC0 | (cp >> 6));
            out += (char) (0x80 | (cp & 0x3F));
        }
        else if (cp < 0x10000) {
            out += (char) (0xE0 | (cp >> 12));
            out += (char) (0x80 | ((cp >> 6) & 0x3F));
            out += (char) (0x80 | (cp & 0x3F));
        }
        else {
            out += (char) (0xF0 | (cp >> 18));
            out += (char) (0x80 | ((cp >> 12) & 0x3F));
            out += (char) (0x80 | ((cp >> 6) & 0x3F));
            out += (char) (0x80 | (cp & 0x3F));
        }
    }
    unsigned int parseHex4() {
        if (i + 4 > s.size())
            fail("truncated \\u escape");
        unsigned int cp = 0;
        for (int k = 0; k < 4; k++) {
            char h = s[i++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= h - '0';
            else if (h >= 'a' && h <= 'f') cp |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') cp |= h - 'A' + 10;
            else fail("invalid \\u escape");
        }
        return cp;
    }
    string parseString() {
        skip();
        if (i >= s.size() || s[i] != '"')
            fail("expected a string");
        i++;
        string out;
        while (true) {
            if (i >= s.size())
                fail("unterminated string");
            char c = s[i++];
            if (c == '"')
                break;
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i >= s.size())
                fail("unterminated string");
            char e = s[i++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned int cp = parseHex4();
                    if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') {
                        i += 2;
                        unsigned int low = parseHex4();
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    }
                    appendUtf8(out, cp);
                    break;
                }
                default: fail("invalid escape");
            }
        }
        return out;
    }
};

} // namespace

const JsonValue* JsonValue::find(const string& key) const {
    if (type != Object)
        return nullptr;
    for (const auto& m : members)
        if (m.first == key)
            return &m.second;
    return nullptr;
}

const JsonValue& JsonValue::at(const string& key, const string& where) const {
    if (type != Object)
        throw OpenMMException(where + " must be a JSON object");
    const JsonValue* v = find(key);
    if (v == nullptr)
        throw OpenMMException(where + " has no \"" + key + "\"");
    return *v;
}

const string& JsonValue::asString(const string& where) const {
    if (type != String)
        throw OpenMMException(where + " must be a string");
    return text;
}

long long JsonValue::asInteger(const string& where) const {
    if (type != Number || number != std::floor(number) || std::fabs(number) > 9.0e15)
        throw OpenMMException(where + " must be an integer");
    return (long long) number;
}

double JsonValue::asNumber(const string& where) const {
    if (type != Number)
        throw OpenMMException(where + " must be a number");
    return number;
}

JsonValue parseJson(const string& text) {
    return Parser(text).parseDocument();
}

} // namespace LatentBiasPlugin
