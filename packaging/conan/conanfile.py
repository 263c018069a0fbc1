"""Conan 2 recipe for decodekit (header-only). From the repository root:
    conan create packaging/conan --build=missing
"""
import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, load
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class DecodekitConan(ConanFile):
    name = "decodekit"
    description = ("Header-only C++20 toolkit that turns language-model logits into tokens: "
                   "SIMD sampling kernels, samplers, logits processors, decoding strategies.")
    license = "MIT"
    homepage = "https://github.com/decodekit/decodekit"
    topics = ("llm", "sampling", "decoding", "simd", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    def _root(self):
        return os.path.join(self.recipe_folder, "..", "..")

    def set_version(self):
        # The single source of the version: include/decodekit/version.hpp.
        text = load(self, os.path.join(self._root(), "include", "decodekit", "version.hpp"))
        parts = [re.search(rf"DECODEKIT_VERSION_{p} (\d+)", text).group(1)
                 for p in ("MAJOR", "MINOR", "PATCH")]
        self.version = ".".join(parts)

    def export_sources(self):
        copy(self, "include/*", self._root(), self.export_sources_folder)
        copy(self, "LICENSE", self._root(), self.export_sources_folder)

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        self.requires("xsimd/[>=8.1 <15]")

    def package_id(self):
        self.info.clear()

    def validate(self):
        check_min_cppstd(self, 20)

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*.hpp", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "decodekit")
        self.cpp_info.set_property("cmake_target_name", "decodekit::decodekit")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.requires = ["xsimd::xsimd"]
