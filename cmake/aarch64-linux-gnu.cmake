# Cross build for 64-bit ARM Linux on a Debian 12 amd64 host (docs/ARM64.md).
#
#   scripts/install-deps.sh --arm64
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#   cmake --build build-arm64 && (cd build-arm64 && ctest -L unit)
#
# Compiler: gcc-aarch64-linux-gnu. Libraries: Debian multiarch, i.e. the :arm64
# -dev packages installed next to the amd64 ones (/usr/lib/aarch64-linux-gnu,
# headers in /usr/include and /usr/include/aarch64-linux-gnu). Programs run at
# build time (protoc-c) are the host's. ctest runs every test executable under
# qemu-user through CMAKE_CROSSCOMPILING_EMULATOR, so binfmt_misc is not needed.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(SG_CROSS_TRIPLET aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${SG_CROSS_TRIPLET}-gcc)
# Set explicitly: CMake would otherwise derive it from the compiler, and the
# find_* calls below depend on it (lib/aarch64-linux-gnu under each root).
set(CMAKE_LIBRARY_ARCHITECTURE ${SG_CROSS_TRIPLET})

# Roots for find_library/find_path/find_package: the cross libc, and "/" for
# the multiarch packages. Only the arch-specific subdirectories of "/" hold
# arm64 libraries; CMAKE_LIBRARY_ARCHITECTURE makes CMake look there first.
set(CMAKE_FIND_ROOT_PATH /usr/${SG_CROSS_TRIPLET} /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)   # protoc-c, python3: host programs
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config (FindPkgConfig) reads only the arm64 .pc files and the
# arch-independent ones, never /usr/lib/x86_64-linux-gnu/pkgconfig. The
# toolchain file is read on every configure, so a re-run sees this too.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${SG_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
unset(ENV{PKG_CONFIG_SYSROOT_DIR})

# The emulator: qemu-aarch64-static, with -L naming where the arm64 dynamic
# loader lives. The multiarch -dev packages pull in libc6:arm64, so "/" has
# /lib/ld-linux-aarch64.so.1 and the libc.so.6 of the same build (the cross
# toolchain's own copy under /usr/aarch64-linux-gnu can lag behind it, and a
# loader must match its libc). Without libc6:arm64, use the cross copy.
find_program(SG_QEMU_AARCH64 qemu-aarch64-static)
if(NOT SG_QEMU_AARCH64)
  message(FATAL_ERROR "qemu-aarch64-static not found: run scripts/install-deps.sh --arm64")
endif()
if(NOT DEFINED SG_QEMU_LD_PREFIX)
  if(EXISTS /lib/ld-linux-aarch64.so.1)
    set(SG_QEMU_LD_PREFIX /)
  else()
    set(SG_QEMU_LD_PREFIX /usr/${SG_CROSS_TRIPLET})
  endif()
endif()
set(SG_QEMU_LD_PREFIX ${SG_QEMU_LD_PREFIX} CACHE PATH "qemu-aarch64 -L: root of the arm64 loader")
set(CMAKE_CROSSCOMPILING_EMULATOR "${SG_QEMU_AARCH64};-L;${SG_QEMU_LD_PREFIX}")
