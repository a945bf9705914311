/* bpc/bpc.h — includes every public header of bpc's core. */
#ifndef BPC_BPC_H
#define BPC_BPC_H
#include <bpc/config.h>
#include <bpc/error.h>
#include <bpc/tensor.h>
#include <bpc/random.h>
#include <bpc/init.h>
#include <bpc/mode.h>
#include <bpc/share.h>
#include <bpc/node.h>
#include <bpc/state.h>
#include <bpc/delay.h>
#include <bpc/checkpoint.h>
#endif
