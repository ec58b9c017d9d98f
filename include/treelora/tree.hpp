// treelora/tree.hpp: the task tree component (tree, similarity and split policies, clustering metrics).
#pragma once

#include "treelora/tree/clustering_metrics.hpp"
#include "treelora/tree/similarity.hpp"
#include "treelora/tree/split.hpp"
#include "treelora/tree/task_tree.hpp"
#include "treelora/tree/tree_node.hpp"
