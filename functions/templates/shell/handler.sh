#!/bin/sh
# {{ name }}: a fork-mode Hark function. The request body arrives on stdin and whatever
# this script prints to stdout is the response. The request's method, path, query and
# headers are in Http_* variables (Http_Method, Http_Path, Http_Query, Http_Content_Type).
# A non-zero exit answers 500 with the end of stderr.
set -eu
body=$(cat)
echo "Hello from {{ name }}, ${body:-world}!"
