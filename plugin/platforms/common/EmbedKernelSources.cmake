# Embed the common-compute kernel sources (*.cc) as C++ strings: cmake -DKERNEL_DIR=... -DOUTPUT_DIR=... -P <this>
file(GLOB _kernels "${KERNEL_DIR}/*.cc")
set(_header "// Generated from plugin/platforms/common/src/kernels/*.cc by EmbedKernelSources.cmake: do not edit.\n#include <string>\nnamespace LatentBiasPlugin {\nstruct LatentBiasKernelSources {\n")
set(_source "#include \"CommonLatentBiasKernelSources.h\"\nusing namespace LatentBiasPlugin;\n")
foreach(_file ${_kernels})
    get_filename_component(_name "${_file}" NAME_WE)
    file(READ "${_file}" _text)
    string(APPEND _header "    static const std::string ${_name};\n")
    string(APPEND _source "const std::string LatentBiasKernelSources::${_name} = R\"LBKERNEL(${_text})LBKERNEL\";\n")
endforeach()
string(APPEND _header "};\n}\n")
file(WRITE "${OUTPUT_DIR}/CommonLatentBiasKernelSources.h.tmp" "${_header}")
file(WRITE "${OUTPUT_DIR}/CommonLatentBiasKernelSources.cpp.tmp" "${_source}")
execute_process(COMMAND "${CMAKE_COMMAND}" -E copy_if_different "${OUTPUT_DIR}/CommonLatentBiasKernelSources.h.tmp"
                "${OUTPUT_DIR}/CommonLatentBiasKernelSources.h")
execute_process(COMMAND "${CMAKE_COMMAND}" -E copy_if_different "${OUTPUT_DIR}/CommonLatentBiasKernelSources.cpp.tmp"
                "${OUTPUT_DIR}/CommonLatentBiasKernelSources.cpp")
