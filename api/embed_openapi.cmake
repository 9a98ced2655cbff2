# Writes api/openapi.json as a C string constant (gm_api_openapi_text) into OUT.
file(READ ${IN} text HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," text "${text}")
file(WRITE ${OUT} "/* Generated from api/openapi.json by embed_openapi.cmake. */\n"
     "const char gm_api_openapi_text[] = {${text} 0};\n")
