#!/bin/sh
# wc: a fork-mode example function that counts the lines, words and bytes of its body.
exec wc
