// Token data formats and windowing.
#include <fstream>
#include <numeric>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/tokendata.h"
#include "model/tokenizer.h"
#include "testutil.h"

using namespace ladimo::core;
using ladimo::test::TempDir;

TEST(TokenData, RawU16AndU32RoundTrip)
{
    TempDir tmp;
    const std::vector<int64_t> ids = {1, 5, 65535, 7, 0};
    saveTokenFile(tmp / "a.u16", ids);
    saveTokenFile(tmp / "a.u32", {1, 70000, 3});
    TokenDataOptions o;
    EXPECT_EQ(loadTokenFile(tmp / "a.u16", nullptr, o), ids);
    EXPECT_EQ(loadTokenFile(tmp / "a.u32", nullptr, o), (std::vector<int64_t>{1, 70000, 3}));
    o.maxTokens = 3;
    EXPECT_EQ(loadTokenFile(tmp / "a.u16", nullptr, o), (std::vector<int64_t>{1, 5, 65535}));
    EXPECT_THROW(saveTokenFile(tmp / "b.u16", {70000, 1}), Error);
}

TEST(TokenData, RejectsBadFiles)
{
    TempDir tmp;
    atomicWriteFile(tmp / "odd.u16", std::string("abc"));
    try {
        loadTokenFile(tmp / "odd.u16", nullptr, {});
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("not a multiple of 2"), std::string::npos) << e.what();
    }
    saveTokenFile(tmp / "big.u16", {1, 600, 2});
    TokenDataOptions o;
    o.vocabSize = 512;
    try {
        loadTokenFile(tmp / "big.u16", nullptr, o);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token id 600 at index 1"), std::string::npos) << e.what();
    }
    atomicWriteFile(tmp / "x.jsonl", std::string("{\"tokens\": [1, 2]}\n{\"text\": 5}\n"));
    try {
        loadTokenFile(tmp / "x.jsonl", nullptr, o);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("x.jsonl:2"), std::string::npos) << e.what();
    }
    atomicWriteFile(tmp / "x.bin", std::string("1234"));
    EXPECT_THROW(loadTokenFile(tmp / "x.bin", nullptr, o), Error);
    atomicWriteFile(tmp / "t.txt", std::string("hello"));
    EXPECT_THROW(loadTokenFile(tmp / "t.txt", nullptr, o), Error); // text needs a tokenizer
}

TEST(TokenData, JsonlTokensAndTextRows)
{
    TempDir tmp;
    atomicWriteFile(tmp / "d.jsonl", std::string("{\"tokens\": [1, 2, 3]}\n\n{\"tokens\": [4]}\n"));
    TokenDataOptions o;
    o.vocabSize = 10;
    EXPECT_EQ(loadTokenFile(tmp / "d.jsonl", nullptr, o), (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST(TokenData, TextIsTokenizedWithOneBosPerDocument)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    const auto demo = ladimo::test::sourceDir() / "resources/demo";
    if (!std::filesystem::exists(demo / "tokenizer.model"))
        GTEST_SKIP() << "demo model absent";
    auto tok = Tokenizer::loadForModel(demo);
    ASSERT_TRUE(tok);
    TempDir tmp;
    atomicWriteFile(tmp / "a.txt", std::string("It is a truth universally acknowledged."));
    atomicWriteFile(tmp / "b.jsonl", std::string("{\"text\": \"It is a truth\"}\n{\"text\": \"universally\"}\n"));
    TokenDataOptions o;
    o.vocabSize = tok->vocabSize();
    o.bosId = tok->bosId();
    const auto ids = loadTokenFile(tmp / "a.txt", tok.get(), o);
    ASSERT_EQ(ids.front(), tok->bosId());
    const std::vector<int> body(ids.begin() + 1, ids.end());
    EXPECT_EQ(tok->decode(body), "It is a truth universally acknowledged.");
    const auto rows = loadTokenFile(tmp / "b.jsonl", tok.get(), o);
    EXPECT_EQ(std::count(rows.begin(), rows.end(), tok->bosId()), 2);
}

TEST(TokenData, WindowsKeepAPartialTail)
{
    std::vector<int64_t> s(10);
    std::iota(s.begin(), s.end(), 0);
    auto w = cutWindows(s, 4);
    ASSERT_EQ(w.size(), 3u);
    EXPECT_EQ(w[2], (std::vector<int64_t>{8, 9}));
    s.push_back(10);
    s.push_back(11);
    s.push_back(12); // 13 tokens: the last window would hold one token and is dropped
    EXPECT_EQ(cutWindows(s, 4).size(), 3u);
    EXPECT_THROW(cutWindows(s, 1), Error);
}
