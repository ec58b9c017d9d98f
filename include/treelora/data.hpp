// treelora/data.hpp: the data component: labelled sets and task streams, gzip IDX files, Fashion-MNIST,
// task splits and seeded batching. Needs zlib (ZLIB::ZLIB).
#pragma once

#include "treelora/data/batching.hpp"
#include "treelora/data/dataset.hpp"
#include "treelora/data/domain_incremental.hpp"
#include "treelora/data/fashion_mnist.hpp"
#include "treelora/data/idx.hpp"
