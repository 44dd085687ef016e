# CMake package config for ironhub, so that `find_package(ironhub)` works.
#
# Two layouts are supported from this one file:
#   - in-tree: -Dironhub_DIR=<repo>/cmake; the library is taken from <repo>/target/release
#     (or target/debug, or IRONHUB_LIB_DIR) and the header from <repo>/include;
#   - installed: <prefix>/lib/cmake/ironhub/ironhubConfig.cmake with <prefix>/lib and <prefix>/include.
# Defines the imported targets ironhub::ironhub (shared) and ironhub::static.
# The version is read from the header's IRONHUB_VERSION_* defines, so it cannot drift from Cargo.toml.

get_filename_component(_ironhub_here "${CMAKE_CURRENT_LIST_DIR}" ABSOLUTE)

find_path(IRONHUB_INCLUDE_DIR ironhub.h
  HINTS "${_ironhub_here}/../include" "${_ironhub_here}/../../../include"
  NO_DEFAULT_PATH)

set(_ironhub_lib_hints "${IRONHUB_LIB_DIR}"
  "${_ironhub_here}/../target/release" "${_ironhub_here}/../target/debug"
  "${_ironhub_here}/../.." "${_ironhub_here}/../../../lib")
find_library(IRONHUB_LIBRARY NAMES ironhub HINTS ${_ironhub_lib_hints} NO_DEFAULT_PATH)
find_file(IRONHUB_STATIC_LIBRARY NAMES libironhub.a ironhub.lib HINTS ${_ironhub_lib_hints} NO_DEFAULT_PATH)

if(IRONHUB_INCLUDE_DIR)
  file(STRINGS "${IRONHUB_INCLUDE_DIR}/ironhub.h" _ironhub_defs REGEX "^#define IRONHUB_VERSION_(MAJOR|MINOR|PATCH) ")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define IRONHUB_VERSION_${_part} ([0-9]+).*" "\\1" ironhub_VERSION_${_part} "${_ironhub_defs}")
  endforeach()
  set(ironhub_VERSION "${ironhub_VERSION_MAJOR}.${ironhub_VERSION_MINOR}.${ironhub_VERSION_PATCH}")
endif()

# A config file reports failure through <Package>_FOUND and _NOT_FOUND_MESSAGE (the version
# check lives in ironhubConfigVersion.cmake).
if(NOT IRONHUB_LIBRARY OR NOT IRONHUB_INCLUDE_DIR)
  set(ironhub_FOUND FALSE)
  set(ironhub_NOT_FOUND_MESSAGE "libironhub or ironhub.h not found next to ${_ironhub_here}: build with `cargo build -p ironhub --release` or set IRONHUB_LIB_DIR")
  return()
endif()

if(NOT TARGET ironhub::ironhub)
  find_package(Threads REQUIRED)
  add_library(ironhub::ironhub UNKNOWN IMPORTED)
  set_target_properties(ironhub::ironhub PROPERTIES
    IMPORTED_LOCATION "${IRONHUB_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${IRONHUB_INCLUDE_DIR}")
  if(IRONHUB_STATIC_LIBRARY)
    # A Rust staticlib needs the system libraries the Rust standard library uses.
    add_library(ironhub::static STATIC IMPORTED)
    set_target_properties(ironhub::static PROPERTIES
      IMPORTED_LOCATION "${IRONHUB_STATIC_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${IRONHUB_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
  endif()
endif()
