// treelora/models.hpp: the models component: the Model concept, the reference ViT and its offline pre-training.
#pragma once

#include "treelora/models/model.hpp"
#include "treelora/models/pretrain.hpp"
#include "treelora/models/transformer/swiglu_mlp.hpp"
#include "treelora/models/vit.hpp"
