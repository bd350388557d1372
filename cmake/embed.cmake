# Turns a binary file into a C array: cmake -DIN=f.pb -DOUT=f.c -DNAME=sym -P embed.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE "${OUT}" "/* generated from ${IN}; do not edit */\n#include <stddef.h>\n#include <stdint.h>\nconst uint8_t ${NAME}[] = {${body}0};\nconst size_t ${NAME}_len = ${len};\n")
