# The version macros of starling.h (printed by `test_api --version`) and the installed
# CMake package's version must equal the workspace version in Cargo.toml.
file(STRINGS "${CARGO_TOML}" lines REGEX "^version = \"")
list(GET lines 0 line)
string(REGEX REPLACE "^version = \"([^\"]+)\".*" "\\1" cargo_version "${line}")
execute_process(COMMAND "${BIN}" --version OUTPUT_VARIABLE header_version
                OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${BIN} --version failed (${rc})")
endif()
if(NOT header_version STREQUAL cargo_version)
  message(FATAL_ERROR "starling.h says ${header_version}, Cargo.toml says ${cargo_version}: regenerate the header")
endif()
if(NOT PACKAGE_VERSION STREQUAL cargo_version)
  message(FATAL_ERROR "the CMake package says ${PACKAGE_VERSION}, Cargo.toml says ${cargo_version}")
endif()
message(STATUS "version ${cargo_version}: header, package and Cargo.toml agree")
