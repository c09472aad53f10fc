// What both relaxflow shims (dist.cpp over c10d; optim/amp/graph/coupling.cpp, see native_util.hpp) share to turn
// C++ exceptions into a status and a message: their own argument errors, and the malloc'd message the Rust side
// reads and hands back to the shim's free function (`native::take_message`).
#pragma once

#include <cstdlib>
#include <cstring>
#include <string>

namespace rf_shim {

// Thrown by a shim's own argument checks; reported as its INVALID status.
struct Invalid {
  std::string msg;
};

// Thrown for what a build or a backend does not offer; reported as its UNSUPPORTED status.
struct Unsupported {
  std::string msg;
};

inline char *copy(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p != nullptr) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

// Writes `msg` to the error slot (when there is one) and returns `code`.
template <typename Status>
Status fail(char **err, Status code, const std::string &msg) {
  if (err != nullptr) *err = copy(msg);
  return code;
}

}  // namespace rf_shim
