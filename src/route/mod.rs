//! Routing: which function a platform event calls, with which input, and how its answer is
//! worded. [`skills`] holds the Alexa skill definitions (`skills/NAME/skill.yaml`).

pub mod skills;
