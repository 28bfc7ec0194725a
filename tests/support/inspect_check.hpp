// Checks that a message's 0.17-style `inspect()` covers every field of the
// struct, for the message structs of embedrt (plain aggregates).
//
//   TEST_CASE("my_msg: inspect covers every field") {
//     embedrt::test::check_inspect_covers_every_field(my_msg{...});
//   }
//
// The sample must set every field to a non-default value. Two checks:
// (a) the sample survives a round trip through CAF's binary serializer and
//     deserializer, compared member by member (nested aggregates and vectors
//     of them included), and no member of the sample equals the member of a
//     default-constructed struct (so no field is left out of the round trip
//     by the test itself);
// (b) the number of members of the struct (counted by brace-initialising it
//     with more and more initializers that convert to anything) equals the
//     number of non-annotation arguments `inspect` passes to its inspector.
// A field added later but forgotten in `inspect` fails (b) without anyone
// editing the test; a field listed twice instead of another fails (a).
//
// Limits: aggregates of at most 32 members, without arrays, references or
// base classes (those are not messages in embedrt).
#pragma once

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/annotation.hpp>
#include <caf/meta/type_name.hpp>
#include <catch2/catch.hpp>
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace embedrt::test {

namespace inspect_check_detail {

// -- counting the members of an aggregate -------------------------------------

/// Converts to any member type (only used in unevaluated contexts).
struct any_member {
  template <class T>
  operator T() const;
};

template <class T, class... Inits>
constexpr auto brace_initializable(int)
    -> decltype(T{std::declval<Inits>()...}, true) {
  return true;
}

template <class T, class... Inits>
constexpr bool brace_initializable(...) {
  return false;
}

/// The number of members of aggregate `T`: the largest number of
/// initializers `T{...}` accepts.
template <class T, class... Inits>
constexpr std::size_t member_count() {
  if constexpr (brace_initializable<T, Inits..., any_member>(0))
    return member_count<T, Inits..., any_member>();
  else
    return sizeof...(Inits);
}

// -- counting what inspect() passes -------------------------------------------

/// An inspector that counts the fields `inspect` hands it (annotations such
/// as the type name are not fields) and remembers the type name.
struct field_counter {
  using result_type = void;
  static constexpr bool reads_state = true;
  static constexpr bool writes_state = false;

  std::size_t fields = 0;
  std::string type_name;

  template <class... Ts>
  void operator()(Ts&&... xs) {
    (note(std::forward<Ts>(xs)), ...);
  }

 private:
  template <class T>
  void note(T&& x) {
    using plain = std::decay_t<T>;
    if constexpr (std::is_same_v<plain, caf::meta::type_name_t>)
      type_name = x.value;
    else if constexpr (!caf::meta::is_annotation<plain>::value)
      ++fields;
  }
};

// -- members as a tuple of references -----------------------------------------

#define EMBEDRT_TIE_MEMBERS(n, ...)                                            \
  if constexpr (count == n) {                                                  \
    auto& [__VA_ARGS__] = x;                                                   \
    return std::tie(__VA_ARGS__);                                              \
  } else

/// `std::tie` of the members of aggregate `x`.
template <class T>
auto tie_members(const T& x) {
  constexpr auto count = member_count<T>();
  static_assert(count >= 1 && count <= 32,
                "tie_members: aggregates of 1 to 32 members only");
  EMBEDRT_TIE_MEMBERS(1, m1)
  EMBEDRT_TIE_MEMBERS(2, m1, m2)
  EMBEDRT_TIE_MEMBERS(3, m1, m2, m3)
  EMBEDRT_TIE_MEMBERS(4, m1, m2, m3, m4)
  EMBEDRT_TIE_MEMBERS(5, m1, m2, m3, m4, m5)
  EMBEDRT_TIE_MEMBERS(6, m1, m2, m3, m4, m5, m6)
  EMBEDRT_TIE_MEMBERS(7, m1, m2, m3, m4, m5, m6, m7)
  EMBEDRT_TIE_MEMBERS(8, m1, m2, m3, m4, m5, m6, m7, m8)
  EMBEDRT_TIE_MEMBERS(9, m1, m2, m3, m4, m5, m6, m7, m8, m9)
  EMBEDRT_TIE_MEMBERS(10, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10)
  EMBEDRT_TIE_MEMBERS(11, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11)
  EMBEDRT_TIE_MEMBERS(12, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12)
  EMBEDRT_TIE_MEMBERS(13, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13)
  EMBEDRT_TIE_MEMBERS(14, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14)
  EMBEDRT_TIE_MEMBERS(15, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15)
  EMBEDRT_TIE_MEMBERS(16, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16)
  EMBEDRT_TIE_MEMBERS(17, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17)
  EMBEDRT_TIE_MEMBERS(18, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18)
  EMBEDRT_TIE_MEMBERS(19, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19)
  EMBEDRT_TIE_MEMBERS(20, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20)
  EMBEDRT_TIE_MEMBERS(21, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21)
  EMBEDRT_TIE_MEMBERS(22, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22)
  EMBEDRT_TIE_MEMBERS(23, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23)
  EMBEDRT_TIE_MEMBERS(24, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24)
  EMBEDRT_TIE_MEMBERS(25, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24, m25)
  EMBEDRT_TIE_MEMBERS(26, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24, m25, m26)
  EMBEDRT_TIE_MEMBERS(27, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24, m25, m26, m27)
  EMBEDRT_TIE_MEMBERS(28, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24, m25, m26, m27, m28)
  EMBEDRT_TIE_MEMBERS(29, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24, m25, m26, m27, m28, m29)
  EMBEDRT_TIE_MEMBERS(30, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24, m25, m26, m27, m28, m29, m30)
  EMBEDRT_TIE_MEMBERS(31, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24, m25, m26, m27, m28, m29, m30, m31)
  EMBEDRT_TIE_MEMBERS(32, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12,
                      m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23,
                      m24, m25, m26, m27, m28, m29, m30, m31, m32) {
    return std::tuple<>{};
  }
}

#undef EMBEDRT_TIE_MEMBERS

// -- member-by-member comparison ----------------------------------------------

template <class T>
struct is_vector : std::false_type {};

template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};

template <class T>
std::string first_difference(const T& a, const T& b);

template <class Tuple, std::size_t... Is>
std::string first_member_difference(const Tuple& a, const Tuple& b,
                                    std::index_sequence<Is...>) {
  std::string where;
  auto check = [&](std::size_t i, const auto& x, const auto& y) {
    if (!where.empty())
      return;
    auto diff = first_difference(x, y);
    if (!diff.empty())
      where
          = "member #" + std::to_string(i) + (diff == "." ? "" : " > " + diff);
  };
  (check(Is, std::get<Is>(a), std::get<Is>(b)), ...);
  return where;
}

/// Empty if `a` and `b` are equal member by member, else where they first
/// differ ("member #3 > [0] > member #1"; "." for a scalar).
template <class T>
std::string first_difference(const T& a, const T& b) {
  if constexpr (is_vector<T>::value) {
    if (a.size() != b.size())
      return "size " + std::to_string(a.size()) + " vs "
          + std::to_string(b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      auto diff = first_difference(a[i], b[i]);
      if (!diff.empty())
        return "[" + std::to_string(i) + "]"
            + (diff == "." ? "" : " > " + diff);
    }
    return {};
  } else if constexpr (std::is_class_v<T> && std::is_aggregate_v<T>) {
    auto ta = tie_members(a);
    auto tb = tie_members(b);
    return first_member_difference(
        ta, tb, std::make_index_sequence<std::tuple_size_v<decltype(ta)>>{});
  } else {
    return a == b ? std::string{} : std::string{"."};
  }
}

template <class Tuple, std::size_t... Is>
std::string equal_members(const Tuple& a, const Tuple& b,
                          std::index_sequence<Is...>) {
  std::string found;
  auto check = [&](std::size_t i, const auto& x, const auto& y) {
    if (first_difference(x, y).empty())
      found += "#" + std::to_string(i) + " ";
  };
  (check(Is, std::get<Is>(a), std::get<Is>(b)), ...);
  return found;
}

/// The members of `sample` that equal those of a default-constructed `T`
/// ("#2 #5 "), empty if none.
template <class T>
std::string default_members(const T& sample) {
  const T def{};
  auto ts = tie_members(sample);
  return equal_members(
      ts, tie_members(def),
      std::make_index_sequence<std::tuple_size_v<decltype(ts)>>{});
}

} // namespace inspect_check_detail

/// The number of members of aggregate `T`.
template <class T>
constexpr std::size_t member_count() {
  static_assert(std::is_aggregate_v<T>, "messages are plain aggregates");
  return inspect_check_detail::member_count<T>();
}

/// The number of fields (non-annotation arguments) `inspect` passes for a
/// `T`, and the type name it announces.
template <class T>
inspect_check_detail::field_counter count_inspected_fields() {
  inspect_check_detail::field_counter f;
  T x{};
  inspect(f, x);
  return f;
}

/// `x` after a trip through CAF's binary serializer and deserializer. Plain
/// structs need no actor system; pass one for messages holding actor
/// handles.
template <class T>
T binary_round_trip(T x, caf::actor_system* sys = nullptr) {
  std::vector<char> buf;
  auto sink = sys != nullptr ? caf::binary_serializer{*sys, buf}
                             : caf::binary_serializer{nullptr, buf};
  auto err = sink(x);
  INFO("serializer: " << caf::to_string(err));
  REQUIRE(!err);
  T y{};
  auto source = sys != nullptr ? caf::binary_deserializer{*sys, buf}
                               : caf::binary_deserializer{nullptr, buf};
  err = source(y);
  INFO("deserializer: " << caf::to_string(err));
  REQUIRE(!err);
  REQUIRE(source.remaining() == 0);
  return y;
}

/// Checks (a) and (b) of the comment at the top for message type `T`
/// (`sys`: see binary_round_trip).
template <class T>
void check_inspect_covers_every_field(const T& sample,
                                      caf::actor_system* sys = nullptr) {
  auto inspected = count_inspected_fields<T>();
  INFO("message type " << inspected.type_name);
  CHECK(member_count<T>() == inspected.fields);
  CHECK(inspect_check_detail::default_members(sample) == "");
  auto copy = binary_round_trip(sample, sys);
  CHECK(inspect_check_detail::first_difference(sample, copy) == "");
}

} // namespace embedrt::test
