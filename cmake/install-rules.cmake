include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(decodekit_config_dir "${CMAKE_INSTALL_DATADIR}/decodekit")

install(DIRECTORY include/ DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT decodekit_Development)
install(TARGETS decodekit EXPORT decodekitTargets INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT decodekitTargets NAMESPACE decodekit:: DESTINATION "${decodekit_config_dir}"
        COMPONENT decodekit_Development)

configure_package_config_file(cmake/decodekitConfig.cmake.in
  "${PROJECT_BINARY_DIR}/decodekitConfig.cmake" INSTALL_DESTINATION "${decodekit_config_dir}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/decodekitConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/decodekitConfig.cmake"
              "${PROJECT_BINARY_DIR}/decodekitConfigVersion.cmake"
              cmake/decodekit-xsimd.cmake
        DESTINATION "${decodekit_config_dir}" COMPONENT decodekit_Development)
