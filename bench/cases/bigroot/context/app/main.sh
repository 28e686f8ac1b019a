#!/bin/sh
echo "hello from the app on a big base"
