# Generates a C file that embeds the dashboard's static files (dashboard/*.html, *.js, *.css,
# *.svg) so that `gridmeter api` serves /dashboard without the source tree. Run at build time
# by dashboard/dashboard.cmake. Inputs: DIR, OUT. Each file gets its path, bytes, length and
# a strong ETag (the first 16 hex digits of its SHA-256).
file(GLOB files RELATIVE "${DIR}" "${DIR}/*.html" "${DIR}/*.js" "${DIR}/*.css" "${DIR}/*.svg")
list(SORT files)
set(body "/* Generated from dashboard/ by dashboard/embed.cmake: do not edit. */\n#include <stddef.h>\n\n")
set(table "typedef struct {\n    const char *path;\n    const unsigned char *data;\n    size_t len;\n    const char *etag;\n} api_static_file;\n\nconst api_static_file api__static_files[] = {\n")
set(i 0)
foreach(f ${files})
    file(READ "${DIR}/${f}" hex HEX)
    file(SHA256 "${DIR}/${f}" sum)
    string(SUBSTRING "${sum}" 0 16 etag)
    file(SIZE "${DIR}/${f}" len)
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," arr "${hex}")
    string(APPEND body "static const unsigned char file_${i}[] = {${arr}0x00};\n")
    string(APPEND table "    {\"${f}\", file_${i}, ${len}u, \"\\\"${etag}\\\"\"},\n")
    math(EXPR i "${i} + 1")
endforeach()
string(APPEND table "};\nconst size_t api__static_files_count = ${i};\n")
file(WRITE "${OUT}.tmp" "${body}\n${table}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
