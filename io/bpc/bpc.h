/* bpc/bpc.h — includes every public header of bpc. */
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
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include <bpc/gradcheck.h>
#include <bpc/batchnorm.h>
#include <bpc/bn_relu_pool.h>
#include <bpc/conv.h>
#include <bpc/dense.h>
#include <bpc/pool.h>
#include <bpc/optimizer.h>
#include <bpc/scheduler.h>
#include <bpc/checkpoint.h>
#endif
