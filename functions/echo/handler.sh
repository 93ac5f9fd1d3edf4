#!/bin/sh
# echo: a fork-mode example function. The request body arrives on stdin and whatever
# is written to stdout is the response, so this answers with the body it was sent.
# The request's method, path and headers are in Http_* variables.
echo "$Http_Method $Http_Path" >&2
exec cat
