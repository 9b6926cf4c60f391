// One name table per enum: printing, parsing and the "expected a, b or c" list of a parse error
// all derive from it, so adding a value is one row and the three cannot disagree.
//
//   constexpr NameTable<Gating, 3> kGatingNames{{{Gating::Hard, "hard"}, {Gating::Renorm, "renorm"}, ...}};
//   const char* gatingName(Gating g) { return nameOf(kGatingNames, g); }
//   Gating parseGating(const std::string& s) { return parseNamed(kGatingNames, s, "gating"); }
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "common/error.h"

namespace ladimo::core {

template <class E> struct Named {
    E value;
    const char* name;
};

template <class E, std::size_t N> using NameTable = std::array<Named<E>, N>;

// The value's name; "?" for a value the table lacks (a cast from a bad integer).
template <class E, std::size_t N> const char* nameOf(const NameTable<E, N>& table, E value)
{
    for (const auto& n : table)
        if (n.value == value)
            return n.name;
    return "?";
}

// "a, b or c".
template <class E, std::size_t N> std::string expectedNames(const NameTable<E, N>& table)
{
    std::string out;
    for (std::size_t i = 0; i < N; ++i)
        out += std::string(i == 0 ? "" : i + 1 == N ? " or " : ", ") + table[i].name;
    return out;
}

// The value named `name`, else an Error: "unknown WHAT 'name' (expected a, b or c)".
template <class E, std::size_t N> E parseNamed(const NameTable<E, N>& table, const std::string& name, const char* what)
{
    for (const auto& n : table)
        if (name == n.name)
            return n.value;
    throw Error("unknown " + std::string(what) + " '" + name + "' (expected " + expectedNames(table) + ")");
}

} // namespace ladimo::core
