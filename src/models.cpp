// The treelora::compiled library: the float CPU ViT and its parts for every factorisation the library ships, and
// its rotation pre-training, instantiated once here. Programs that link the library see them declared
// `extern template` (models/vit.hpp, models/pretrain.hpp and the strategy headers) and do not compile them again
// (docs/build_time.md).
// The kernels and decompositions come from the library's other units (src/cpu_backend.cpp, src/linalg.cpp).
#define TREELORA_COMPILED

#include "treelora/lora/duallora.hpp"
#include "treelora/lora/inflora.hpp"
#include "treelora/lora/olora.hpp"
#include "treelora/models/pretrain.hpp"
#include "treelora/models/vit.hpp"

namespace treelora {

template class optional_lora_linear<cpu_backend<float>, standard_lora>;
template class multi_head_attention<cpu_backend<float>, standard_lora>;
template class mlp_block<cpu_backend<float>, standard_lora>;
template class transformer_block<cpu_backend<float>, standard_lora>;
template class vit<cpu_backend<float>, standard_lora>;

template class optional_lora_linear<cpu_backend<float>, inflora>;
template class multi_head_attention<cpu_backend<float>, inflora>;
template class mlp_block<cpu_backend<float>, inflora>;
template class transformer_block<cpu_backend<float>, inflora>;
template class vit<cpu_backend<float>, inflora>;

template class optional_lora_linear<cpu_backend<float>, olora>;
template class multi_head_attention<cpu_backend<float>, olora>;
template class mlp_block<cpu_backend<float>, olora>;
template class transformer_block<cpu_backend<float>, olora>;
template class vit<cpu_backend<float>, olora>;

template class optional_lora_linear<cpu_backend<float>, dual_lora>;
template class multi_head_attention<cpu_backend<float>, dual_lora>;
template class mlp_block<cpu_backend<float>, dual_lora>;
template class transformer_block<cpu_backend<float>, dual_lora>;
template class vit<cpu_backend<float>, dual_lora>;

template pretrain_report pretrain_rotation(vit<cpu_backend<float>>&, image_view, const pretrain_settings&);
template double rotation_accuracy(vit<cpu_backend<float>>&, image_view, index_t, index_t);

}  // namespace treelora
