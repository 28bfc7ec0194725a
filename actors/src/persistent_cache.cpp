#include "persistent_cache.hpp"

#include <cstring>
#include <filesystem>
#include <lmdb.h>
#include <map>

namespace embedrt::detail {

namespace {

/// A value: the write time (unix milliseconds, 8 bytes, host order) and the
/// floats (host order; an LMDB file is not portable across byte orders).
constexpr std::size_t stamp_bytes = sizeof(int64_t);

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string lmdb_error(const char* what, int rc) {
  return std::string{what} + ": " + mdb_strerror(rc);
}

/// The stores open in this process, by canonical path.
std::map<std::string, std::weak_ptr<persistent_store>>& open_stores() {
  static std::map<std::string, std::weak_ptr<persistent_store>> stores;
  return stores;
}

} // namespace

struct persistent_store::lmdb {
  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;

  ~lmdb() {
    if (env != nullptr)
      mdb_env_close(env);
  }
};

std::shared_ptr<persistent_store>
persistent_store::open(const std::string& path, std::size_t map_bytes,
                       std::string& err) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    err = "cannot create the cache directory " + path + ": " + ec.message();
    return nullptr;
  }
  auto canonical = std::filesystem::canonical(path, ec).string();
  if (ec) {
    err = "cannot resolve the cache directory " + path + ": " + ec.message();
    return nullptr;
  }
  auto& stores = open_stores();
  if (auto i = stores.find(canonical); i != stores.end())
    if (auto live = i->second.lock())
      return live;
  std::shared_ptr<persistent_store> store{new persistent_store};
  store->path_ = path;
  store->db_ = std::make_unique<lmdb>();
  auto& db = *store->db_;
  int rc = mdb_env_create(&db.env);
  if (rc == 0)
    rc = mdb_env_set_mapsize(db.env, map_bytes);
  if (rc == 0)
    rc = mdb_env_open(db.env, canonical.c_str(), MDB_NOTLS, 0644);
  if (rc != 0) {
    err = lmdb_error(("cannot open the cache store " + path).c_str(), rc);
    return nullptr;
  }
  // Reader slots of processes that were killed are freed.
  int dead = 0;
  mdb_reader_check(db.env, &dead);
  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(db.env, nullptr, 0, &txn);
  if (rc == 0)
    rc = mdb_dbi_open(txn, nullptr, 0, &db.dbi);
  if (rc == 0)
    rc = mdb_txn_commit(txn);
  else if (txn != nullptr)
    mdb_txn_abort(txn);
  if (rc != 0) {
    err = lmdb_error(("cannot open the cache store " + path).c_str(), rc);
    return nullptr;
  }
  stores[canonical] = store;
  return store;
}

persistent_store::~persistent_store() = default;

bool persistent_store::get(const std::vector<std::string>& keys,
                           std::chrono::milliseconds ttl,
                           std::vector<std::vector<float>>& out,
                           std::string& err) {
  out.assign(keys.size(), {});
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(db_->env, nullptr, MDB_RDONLY, &txn); rc != 0) {
    err = lmdb_error("cache store read", rc);
    return false;
  }
  auto oldest = ttl.count() > 0 ? unix_ms() - ttl.count() : INT64_MIN;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    MDB_val k{keys[i].size(), const_cast<char*>(keys[i].data())};
    MDB_val v;
    if (mdb_get(txn, db_->dbi, &k, &v) != 0 || v.mv_size < stamp_bytes
        || (v.mv_size - stamp_bytes) % sizeof(float) != 0
        || v.mv_size == stamp_bytes)
      continue;
    int64_t stamp = 0;
    std::memcpy(&stamp, v.mv_data, stamp_bytes);
    if (stamp < oldest)
      continue;
    auto n = (v.mv_size - stamp_bytes) / sizeof(float);
    out[i].resize(n);
    std::memcpy(out[i].data(),
                static_cast<const char*>(v.mv_data) + stamp_bytes,
                n * sizeof(float));
  }
  mdb_txn_abort(txn);
  return true;
}

bool persistent_store::put(const std::vector<std::string>& keys,
                           const std::vector<std::vector<float>>& vectors,
                           std::string& err) {
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(db_->env, nullptr, 0, &txn); rc != 0) {
    err = lmdb_error("cache store write", rc);
    return false;
  }
  auto stamp = unix_ms();
  std::string buf;
  for (std::size_t i = 0; i < keys.size() && i < vectors.size(); ++i) {
    buf.resize(stamp_bytes + vectors[i].size() * sizeof(float));
    std::memcpy(buf.data(), &stamp, stamp_bytes);
    std::memcpy(buf.data() + stamp_bytes, vectors[i].data(),
                vectors[i].size() * sizeof(float));
    MDB_val k{keys[i].size(), const_cast<char*>(keys[i].data())};
    MDB_val v{buf.size(), buf.data()};
    if (int rc = mdb_put(txn, db_->dbi, &k, &v, 0); rc != 0) {
      mdb_txn_abort(txn);
      err = lmdb_error("cache store write", rc);
      return false;
    }
  }
  if (int rc = mdb_txn_commit(txn); rc != 0) {
    err = lmdb_error("cache store commit", rc);
    return false;
  }
  return true;
}

} // namespace embedrt::detail
