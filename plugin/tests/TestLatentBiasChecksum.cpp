/*
 * The model-file checksums the C++ constructor verifies (as latentbias.load_model does): SHA-256 against the FIPS
 * 180-4 test vectors, Python's float repr and json.dumps(sort_keys=True) against values Python printed, and model
 * files written by latentbias' own writer (make_test_models.py: intact, one flipped byte, re-zipped with an edited
 * metadata value or weight byte) through LatentBiasForce(path), fromModelData and an XML round trip. The zip structure
 * check (what Python's zipfile refuses and libtorch's miniz does not read: local-header names, central "version
 * needed", the zip64 end records) and the downgrade holes (a model's format_version or a serialized force's version
 * edited to 1 while the checksums remain: refused; a genuine version 1: loaded with a warning on stderr).
 */
#include "TestUtilities.h"
#include "internal/LatentBiasChecksum.h"
#include "internal/LatentBiasUtilities.h"
#include "openmm/serialization/XmlSerializer.h"
#include <iostream>
#include <limits>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace LatentBiasTest;
using namespace std;

static void testSha256() {
    ASSERT_EQUAL(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ASSERT_EQUAL(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ASSERT_EQUAL(sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    ASSERT_EQUAL(sha256Hex(string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    // lengths around the padding boundaries (55/56/64 bytes), as hashlib.sha256(b"a" * n).hexdigest() prints them
    ASSERT_EQUAL(sha256Hex(string(55, 'a')), "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    ASSERT_EQUAL(sha256Hex(string(56, 'a')), "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    ASSERT_EQUAL(sha256Hex(string(64, 'a')), "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

static void testPythonFloatRepr() {
    // repr() in Python 3
    const vector<pair<double, string>> cases = {
        {0.1, "0.1"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {1e-5, "1e-05"}, {1e-4, "0.0001"},
        {-0.0, "-0.0"}, {5e-324, "5e-324"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
        {9.313225746154785e-10, "9.313225746154785e-10"}, {-1.2345678901234567, "-1.2345678901234567"},
        {123456789012345678.0, "1.2345678901234568e+17"}, {2.5, "2.5"}, {100.0, "100.0"},
        {numeric_limits<double>::infinity(), "Infinity"}};
    for (const auto& c : cases)
        ASSERT_EQUAL(pythonFloatRepr(c.first), c.second);
}

static void testCanonicalJson() {
    // json.dumps(json.loads(text), sort_keys=True) in Python, with the top-level "checksums" dropped
    ASSERT_EQUAL(canonicalJson("{\"b\":1,\"a\":[1.50,-0.0,1E-7,3,true,null],\"checksums\":{\"x\":1},"
                               "\"\\u00e9\":\"\xc3\xbc\\u2603\\ud83d\\ude00\\u007f\\n\\\"\\\\\\/\",\"n\":{\"z\":1,\"Z\":2,\"\":[]}}",
                               "checksums"),
                 "{\"a\": [1.5, -0.0, 1e-07, 3, true, null], \"b\": 1, \"n\": {\"\": [], \"Z\": 2, \"z\": 1}, "
                 "\"\\u00e9\": \"\\u00fc\\u2603\\ud83d\\ude00\\u007f\\n\\\"\\\\/\"}");
    ASSERT_EQUAL(canonicalJson(" {\"k\": 1E5, \"j\": 1.50e+2, \"i\": -0, \"a\": 1, \"a\": 2, \"x\": NaN} "),
                 "{\"a\": 2, \"i\": 0, \"j\": 150.0, \"k\": 100000.0, \"x\": NaN}");
    ASSERT_EQUAL(canonicalJson("{\"nested\": {\"checksums\": 1}}", "checksums"), "{\"nested\": {\"checksums\": 1}}");
    expectThrow([] { canonicalJson("{\"a\": 01}"); }, "invalid JSON at byte 7");
    expectThrow([] { canonicalJson("[1,]"); }, "invalid JSON");
    expectThrow([] { canonicalJson("\"a\tb\""); }, "control character");
}

static bool haveFormat2Models() {
    if (ifstream(modelPath("model_v2.pt")).good())
        return true;
    cout << "SKIP: no format-2 test models (make_test_models.py could not import latentbias)" << endl;
    return false;
}

static string readFile(const string& path) {
    ifstream in(path, ios::binary);
    stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

/** What `body` writes to std::cerr. */
template <class F>
static string captureStderr(F body) {
    stringstream captured;
    streambuf* old = cerr.rdbuf(captured.rdbuf());
    try {
        body();
    }
    catch (...) {
        cerr.rdbuf(old);
        throw;
    }
    cerr.rdbuf(old);
    return captured.str();
}

static void testModelFiles() {
    if (!haveFormat2Models())
        return;
    LatentBiasForce good(modelPath("model_v2.pt"));  // canonical metadata with floats and non-ASCII text: accepted
    ASSERT_EQUAL(good.getModelLatentDim(), 3);
    const string fix = "re-export the model";
    string flipped = modelPath("model_v2_flipped.pt");
    expectThrow([&] { LatentBiasForce f(flipped); }, "model file '" + flipped + "'");
    expectThrow([&] { LatentBiasForce f(flipped); }, "archive entry 'data/0' is damaged");
    expectThrow([&] { LatentBiasForce f(flipped); }, fix);
    expectThrow([&] { delete LatentBiasForce::fromModelData(readFile(flipped)); }, "archive entry 'data/0'");
    string meta = modelPath("model_v2_meta_edited.pt");
    expectThrow([&] { LatentBiasForce f(meta); }, "model file '" + meta + "'");
    expectThrow([&] { LatentBiasForce f(meta); }, "checksums.metadata_sha256");
    string weights = modelPath("model_v2_weights_edited.pt");
    expectThrow([&] { LatentBiasForce f(weights); }, "checksums.content_sha256");
    expectThrow([&] { LatentBiasForce f(weights); }, fix);
    // a flipped byte in a local-header name (libtorch never reads it; Python's zipfile refuses the file)
    string localName = modelPath("model_v2_local_name.pt");
    expectThrow([&] { LatentBiasForce f(localName); }, "zip structure is damaged");
    expectThrow([&] { LatentBiasForce f(localName); }, "names it differently");
    // format_version edited to 1 with the checksums kept: refused (it would skip every check)
    string downgraded = modelPath("model_v2_downgraded.pt");
    expectThrow([&] { LatentBiasForce f(downgraded); }, "a format-1 file never held them");
    // format 1 (no checksums) still loads, with a warning naming the file
    string text = captureStderr([&] { LatentBiasForce old(modelPath("model_d3.pt")); });
    ASSERT(text.find("model_d3.pt") != string::npos && text.find("loaded unverified") != string::npos);
    ASSERT(captureStderr([&] { LatentBiasForce f(modelPath("model_v2.pt")); }).empty());
}

static void testZipStructure() {
    if (!haveFormat2Models())
        return;
    const string data = readFile(modelPath("model_v2.pt"));
    ASSERT_EQUAL(zipStructureProblem(data), "");
    ASSERT_EQUAL(zipStructureProblem(readFile(modelPath("model_v2_weights_edited.pt"))), "");  // Python's zipfile wrote it
    auto flipped = [&](size_t at) {
        string bad = data;
        bad[at] ^= (char) 0xFF;
        return zipStructureProblem(bad);
    };
    auto contains = [](const string& text, const string& part) {
        if (text.find(part) == string::npos)
            throw OpenMMException("expected '" + part + "' in '" + text + "'");
    };
    contains(flipped(30), "local header of");  // the first entry's local name (libtorch's miniz never reads it)
    size_t central = data.find("PK\x01\x02");
    ASSERT(central != string::npos);
    contains(flipped(central + 6), "to extract");  // "version needed": Python's zipfile refuses above 6.3
    contains(flipped(central + 46), "central directory");  // a central name that is no longer UTF-8
    size_t end = data.size() - 22;
    ASSERT_EQUAL(data.substr(end, 4), string("PK\x05\x06"));
    ASSERT(!flipped(end - 20).empty());  // the zip64 end locator, which Python's zipfile relies on
    ASSERT(!flipped(end + 4).empty());  // the end record's disk number
    ASSERT(!flipped(data.size() - 1).empty());  // the comment length
    ASSERT(!zipStructureProblem(data.substr(0, data.size() - 1)).empty());
    ASSERT(!zipStructureProblem("").empty());
}

static void testSerializedModel() {
    if (!haveFormat2Models())
        return;
    // An XML whose model is damaged but whose (outer) checksum was recomputed: the model's own checksums catch it.
    LatentBiasForce good(modelPath("model_v2.pt"));
    stringstream xml;
    XmlSerializer::serialize<LatentBiasForce>(&good, "LatentBiasForce", xml);
    string text = xml.str();
    string bad = readFile(modelPath("model_v2_weights_edited.pt"));
    auto replaceAttribute = [&](const string& name, const string& value) {
        size_t at = text.find(name + "=\"");
        ASSERT(at != string::npos);
        size_t begin = at + name.size() + 2, end = text.find('"', begin);
        text = text.substr(0, begin) + value + text.substr(end);
    };
    replaceAttribute("model", base64Encode(bad));
    replaceAttribute("modelChecksum", checksum64(bad));
    stringstream in(text);
    expectThrow([&] { delete XmlSerializer::deserialize<LatentBiasForce>(in); }, "serialized force");
    stringstream again(text);
    expectThrow([&] { delete XmlSerializer::deserialize<LatentBiasForce>(again); }, "checksums.content_sha256");
    // version edited to 1 with the checksums kept: refused; a genuine version 1 (no checksums): read, with a warning
    stringstream good2;
    XmlSerializer::serialize<LatentBiasForce>(&good, "LatentBiasForce", good2);
    string v1 = good2.str();
    size_t at = v1.find("version=\"2\"");
    ASSERT(at != string::npos);
    v1.replace(at, 11, "version=\"1\"");
    stringstream edited(v1);
    expectThrow([&] { delete XmlSerializer::deserialize<LatentBiasForce>(edited); }, "its version was edited");
    for (const string attribute : {" modelChecksum=\"", " valuesChecksum=\""}) {
        size_t sum = v1.find(attribute);
        ASSERT(sum != string::npos);
        v1.erase(sum, v1.find('"', sum + attribute.size()) + 1 - sum);
    }
    ASSERT(v1.find("Checksum") == string::npos);
    stringstream genuine(v1);
    string warning = captureStderr([&] { delete XmlSerializer::deserialize<LatentBiasForce>(genuine); });
    ASSERT(warning.find("version 1") != string::npos && warning.find("unverified") != string::npos);
}

int main(int argc, char* argv[]) {
    initPlatforms();
    return runTests(argc, argv, {
        {"SHA-256 test vectors", testSha256},
        {"Python float repr", testPythonFloatRepr},
        {"canonical JSON (json.dumps sort_keys)", testCanonicalJson},
        {"model files: intact, flipped byte, edited metadata, edited weights", testModelFiles},
        {"serialized force with a damaged model", testSerializedModel},
        {"zip structure as Python's zipfile reads it", testZipStructure},
    });
}
