#!/bin/sh
# Build KenLM's lmplz and build_binary from the PyPI kenlm sdist (Debian has no lmplz).
#
#   sh examples/lm/build_kenlm_tools.sh [PREFIX]        # default PREFIX: ./build/kenlm
#
# Needs cmake, a C++ compiler and Debian's boost/compression packages:
#   apt-get install cmake g++ libboost-program-options-dev libboost-system-dev \
#       libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev libeigen3-dev
# The binaries land in PREFIX/bin. About 70 s on 2 cores.
set -eu
PREFIX=$(realpath -m "${1:-build/kenlm}")
PIP=${PIP:-.venv/bin/pip}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PIP" download --no-deps --no-binary kenlm --no-build-isolation --dest "$WORK" kenlm >/dev/null
tar -xzf "$WORK"/kenlm-*.tar.gz -C "$WORK"
SRC=$(find "$WORK" -maxdepth 1 -type d -name 'kenlm-*' | head -n 1)
mkdir -p "$SRC/build" "$PREFIX/bin"
cd "$SRC/build"
cmake .. -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >"$WORK/cmake.log" 2>&1 || { tail -n 40 "$WORK/cmake.log"; exit 1; }
make -j"$(nproc)" lmplz build_binary >"$WORK/make.log" 2>&1 || { tail -n 40 "$WORK/make.log"; exit 1; }
cp bin/lmplz bin/build_binary "$PREFIX/bin/"
echo "built $PREFIX/bin/lmplz and $PREFIX/bin/build_binary"
echo "example: $PREFIX/bin/lmplz -o 3 --discount_fallback -S 100M -T /tmp < text.txt > lm.arpa"
echo "         $PREFIX/bin/build_binary lm.arpa lm.bin"
