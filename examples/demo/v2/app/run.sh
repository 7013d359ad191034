#!/bin/sh
echo "demo app 1.1"
