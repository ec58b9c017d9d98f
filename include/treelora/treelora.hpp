// treelora/treelora.hpp: the umbrella header. Include this, or one component header.
#pragma once

#include "treelora/version.hpp"
#include "treelora/core/error.hpp"
#include "treelora/backend/backend.hpp"
#include "treelora/backend/random.hpp"
#include "treelora/backend/cpu_backend.hpp"
#include "treelora/tensor/shape.hpp"
#include "treelora/tensor/tensor.hpp"
#include "treelora/tensor/ops.hpp"
#include "treelora/tensor/eigen_interop.hpp"
