# Finds xsimd >= 8.1 and repairs Debian's package. Used by our build and by the installed
# decodekitConfig.cmake alike.
#
# - xsimd's version file is SameMajorVersion, so asking for 8.1 would reject 14: we ask for any
#   version and check the floor ourselves.
# - Debian 12's libxsimd-dev exports INTERFACE_LINK_LIBRARIES "xtl" although xtl is neither
#   required nor installed: linking then fails with "-lxtl not found". When no xtl target exists
#   we drop that dangling item from the imported target.
if(NOT TARGET xsimd)
  find_package(xsimd CONFIG QUIET)
  if(NOT xsimd_FOUND)
    message(FATAL_ERROR "decodekit needs xsimd >= 8.1 (Debian: apt-get install libxsimd-dev; "
                        "vcpkg/Conan: xsimd). Set CMAKE_PREFIX_PATH or xsimd_DIR.")
  endif()
  if(DEFINED xsimd_VERSION AND xsimd_VERSION VERSION_LESS 8.1)
    message(FATAL_ERROR "decodekit needs xsimd >= 8.1, found ${xsimd_VERSION} in ${xsimd_DIR}")
  endif()
endif()
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_decodekit_xsimd_libs xsimd INTERFACE_LINK_LIBRARIES)
  if(_decodekit_xsimd_libs)
    list(REMOVE_ITEM _decodekit_xsimd_libs xtl)
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "${_decodekit_xsimd_libs}")
  endif()
  unset(_decodekit_xsimd_libs)
endif()
