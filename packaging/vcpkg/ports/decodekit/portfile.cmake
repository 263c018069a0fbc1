# Overlay port that builds from this checkout:
#   vcpkg install decodekit --overlay-ports=<repo>/packaging/vcpkg/ports
# For a registry port, replace SOURCE_PATH with vcpkg_from_github(... REF v${VERSION} ...).
set(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../../..")

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DDECODEKIT_BUILD_TESTS=OFF
        -DDECODEKIT_BUILD_EXAMPLES=OFF
        -DDECODEKIT_BUILD_BENCHMARKS=OFF
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/decodekit)

# Header-only: nothing is built, so no debug tree.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
